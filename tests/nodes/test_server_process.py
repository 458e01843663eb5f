"""``flowfed server`` (a real subprocess) accepts node agents and lists them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from flowfed.node.agent import spawn_node
from tests.nodes.conftest import make_csv
from tests.server.conftest import start_server, stop


def test_flowfed_server_hosts_nodes(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv", f"sqlite:///{tmp_path / 'srv.db'}")
    proc = None
    try:
        res = server.ff("nodes", "add", "hospital-c", "--server", server.url,
                        "--database-url", server.db_url)  # fmt: skip
        creds = tmp_path / "c.json"
        creds.write_text(res.stdout)
        assert json.loads(res.stdout)["server"] == server.url
        csv = make_csv(tmp_path / "c.csv", "C", rows=6)
        proc = spawn_node(
            "hospital-c", server.url, creds, {"breast": csv},
            log_file=tmp_path / "node.log", work_dir=tmp_path / "work",
        )  # fmt: skip
        c = server.client()
        deadline = time.monotonic() + 60
        while True:
            item = c.get("/api/v1/nodes/hospital-c").json()
            if item["online"]:
                break
            assert proc.poll() is None, (tmp_path / "node.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert item["datasets"][0]["rows"] == 6
        listed = server.ff("--server", server.url, "--token", server.token, "nodes", "list")
        assert "hospital-c" in listed.stdout and "online" in listed.stdout
        # A node token is not an API token.
        token = json.loads(creds.read_text())["token"]
        assert server.client(token).get("/api/v1/nodes").status_code == 401
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        stop(server)
