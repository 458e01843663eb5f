"""flowfed nodes add|list|remove, bad node start options, dataset changes recorded."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from flowfed.db import Database
from flowfed.server.auth import create_token, hash_secret
from flowfed.server.nodes import NODE_EVENTS
from tests.nodes.conftest import Cluster, Node, make_csv


def ff(*args: str, cwd: Path, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("FLOWFED_SERVER", None)
    env.pop("FLOWFED_TOKEN", None)
    res = subprocess.run(
        [sys.executable, "-m", "flowfed", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if check is not None:
        assert res.returncode == check, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def test_add_list_remove(cluster: Cluster, tmp_path: Path) -> None:
    db = cluster.db_url
    out = tmp_path / "node.json"
    res = ff("nodes", "add", "hospital-a", "--out", str(out), "--server", cluster.srv.url,
             "--database-url", db, cwd=tmp_path)  # fmt: skip
    creds = json.loads(res.stdout)
    assert creds == json.loads(out.read_text())
    assert creds["name"] == "hospital-a" and creds["server"] == cluster.srv.url
    assert creds["token"].startswith("ffn_")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "cannot be shown again" in res.stderr
    # Only the hash is stored.
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT token_hash FROM nodes")).one()
    engine.dispose()
    assert row.token_hash == hash_secret(creds["token"][4:])
    dup = ff("nodes", "add", "hospital-a", "--database-url", db, cwd=tmp_path, check=2)
    assert "a node named 'hospital-a' exists already" in dup.stderr
    bad = ff("nodes", "add", "no/slash", "--database-url", db, cwd=tmp_path, check=2)
    assert "node name 'no/slash' must be" in bad.stderr

    # The credentials file carries the server: no --server needed to start.
    csv = make_csv(tmp_path / "a.csv", "A", rows=3)
    node_root = tmp_path / "n"
    node_root.mkdir()
    cluster.nodes.append(
        Node(
            "hospital-a",
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flowfed",
                    "node",
                    "start",
                    "--name",
                    "hospital-a",
                    "--credentials",
                    str(out),
                    "--dataset",
                    f"breast={csv}",
                    "--work-dir",
                    str(tmp_path / "w"),
                ],
                cwd=node_root,
                stdout=subprocess.DEVNULL,
                stderr=open(node_root / "log", "wb"),  # noqa: SIM115
            ),
            node_root,
            node_root / "log",
        )
    )
    cluster.wait_online("hospital-a", cluster.nodes[-1])

    database = Database(db)
    try:
        token = create_token(database, "admin", "admin").token
    finally:
        database.close()
    listed = ff("--server", cluster.srv.url, "--token", token, "nodes", "list", "--json",
                cwd=tmp_path)  # fmt: skip
    (item,) = json.loads(listed.stdout)
    assert item["name"] == "hospital-a" and item["online"] is True
    assert item["datasets"][0]["rows"] == 3
    table = ff("--server", cluster.srv.url, "--token", token, "nodes", "list", cwd=tmp_path)
    assert "hospital-a" in table.stdout and "online" in table.stdout and "3 rows" in table.stdout
    anon = ff("--server", cluster.srv.url, "nodes", "list", cwd=tmp_path, check=2)
    assert "HTTP 401" in anon.stderr

    removed = ff("nodes", "remove", "hospital-a", "--database-url", db, cwd=tmp_path)
    assert "removed" in removed.stdout
    # The connected agent is cut off and, refused on reconnecting, exits with code 3.
    assert cluster.nodes[-1].proc.wait(60) == 3
    assert "refused the credentials of node 'hospital-a'" in cluster.nodes[-1].log()
    assert any(r["reason"] == "its credentials were revoked" for r in cluster.hub.refusals)
    gone = ff("nodes", "remove", "hospital-a", "--database-url", db, cwd=tmp_path, check=2)
    assert "no node named 'hospital-a'" in gone.stderr


def test_node_start_bad_options(cluster: Cluster, tmp_path: Path) -> None:
    creds = cluster.credentials("site")
    url = cluster.srv.url
    cases = [
        (["--credentials", str(tmp_path / "none.json")], "cannot read credentials"),
        (["--credentials", str(creds), "--name", "other"], "holds the credentials of node 'site'"),
        (["--credentials", str(creds), "--dataset", "breast"], "--dataset must read NAME=PATH"),
        (["--credentials", str(creds), "--dataset", f"b={tmp_path / 'x.csv'}"], "no such file"),
        (["--credentials", str(creds), "--runner", "docker"], "--runner must be one of"),
        (["--credentials", str(creds), "--cache-mb", "-1"], "--cache-mb must be 0 (off) or more"),
        (["--credentials", str(creds), "--import", "no_such_module_xyz"], "cannot import tools"),
    ]
    for extra, message in cases:
        args = ["node", "start", "--server", url, "--work-dir", str(tmp_path / "w")]
        if "--name" not in extra:
            args += ["--name", "site"]
        res = ff(*args, *extra, cwd=tmp_path, check=2)
        assert message in res.stderr, (extra, res.stderr)
        assert "Traceback" not in res.stderr


def test_dataset_change_is_recorded(cluster: Cluster, tmp_path: Path) -> None:
    csv = make_csv(tmp_path / "a.csv", "A", rows=3)
    node = cluster.start_node("site", {"breast": csv})
    first = cluster.hub.nodes()["site"].datasets["breast"]["hash"]
    node.proc.terminate()
    node.proc.wait(30)
    cluster.wait_offline("site")
    make_csv(csv, "A", rows=4)
    cluster.start_node("site", {"breast": csv})
    second = cluster.hub.nodes()["site"].datasets["breast"]["hash"]
    assert first != second
    engine = sa.create_engine(cluster.db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT node, dataset, old_hash, new_hash FROM node_dataset_changes ORDER BY id"
            )
        ).all()
        # The trigger service's source (platform_events) holds the same two changes.
        seen = conn.execute(
            sa.text("SELECT payload FROM platform_events WHERE kind = 'node.dataset_changed'")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("site", "breast", None, first),
        ("site", "breast", first, second),
    ]
    payloads = [json.loads(p) if isinstance(p, str) else p for (p,) in seen]
    assert [(p["node"], p["old_hash"], p["new_hash"]) for p in payloads] == [
        ("site", None, first),
        ("site", first, second),
    ]
    # ...and the same change went out on the bus for the trigger service.
    event = asyncio.run_coroutine_threadsafe(_next_node_event(cluster), cluster.hub.loop)
    make_csv(csv, "A", rows=5)
    node = cluster.nodes[-1]
    node.proc.terminate()
    node.proc.wait(30)
    cluster.wait_offline("site")
    cluster.start_node("site", {"breast": csv})
    got = event.result(60)
    assert got["kind"] == "node.dataset_changed" and got["run_id"] == NODE_EVENTS
    assert got["payload"]["old_hash"] == second
    assert got["payload"]["new_hash"] == cluster.hub.nodes()["site"].datasets["breast"]["hash"]


async def _next_node_event(cluster: Cluster) -> dict[str, Any]:
    sub = cluster.srv.app.state.bus.subscribe(NODE_EVENTS)
    try:
        event: dict[str, Any] = await sub.get(60)
        return event
    finally:
        sub.close()
