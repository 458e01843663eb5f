"""Every catalog command of the CLI speaks to the server it is given, and nothing else.

With ``--server`` (or ``$FLOWFED_SERVER``) ``runs``, ``artifacts``, ``lineage``, ``models``,
``tools``, ``validate`` and ``flows`` go to a real ``flowfed server`` subprocess; they never
open (or create) a local ``.flowfed/``. Commands without a server form refuse it (exit 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import Server

FLOW = """
name: remote chain
steps:
  - name: load
    tool: numbers
    params: {n: 4}
    outputs: [xs]
  - name: double
    tool: scale
    inputs: {xs: xs}
    outputs: [ys]
  - name: sum
    tool: total
    inputs: {xs: ys}
    outputs: [summary]
"""

SLOW = """
name: remote slow
steps:
  - name: wait
    tool: slow
    params: {seconds: 60}
"""


class Client:
    """The CLI run in an empty folder with no local catalog configured."""

    def __init__(self, server: Server, root: Path) -> None:
        self.server = server
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for key in ("FLOWFED_DATABASE_URL", "FLOWFED_ARTIFACTS_URL", "FLOWFED_TOKEN"):
            env.pop(key, None)
        env["FLOWFED_HOME"] = str(root / ".flowfed")
        env["FLOWFED_SERVER"] = server.url
        self.env = env

    def ff(self, *args: str, check: int | None = 0, token: bool = True) -> Any:
        extra = ["--token", self.server.token] if token else []
        res = subprocess.run(
            [sys.executable, "-m", "flowfed", *extra, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check is not None:
            assert res.returncode == check, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.ff(*args, "--json").stdout)


def _start(server: Server, source: str) -> str:
    r = server.client().post("/api/v1/runs", json={"source": textwrap.dedent(source)})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


@pytest.fixture
def client(server: Server, tmp_path: Path) -> Client:
    return Client(server, tmp_path / "elsewhere")


def test_runs_artifacts_lineage_models_and_tools_come_from_the_server(
    server: Server, client: Client
) -> None:
    run_id = _start(server, FLOW)
    assert server.wait_run(run_id)["status"] == "success"

    listed = client.json("runs", "list", "--limit", "50")
    assert run_id in [r["id"] for r in listed]
    table = client.ff("runs", "list").stdout
    assert run_id[:12] in table and "remote chain" in table

    shown = client.json("runs", "show", run_id[:10])
    assert shown["id"] == run_id and shown["status"] == "success"
    load = next(t for t in shown["tasks"] if t["step"] == "load")
    assert [line["message"] for line in load["logs"]] == ["making 4 numbers", "done"]
    assert [tr["dst"] for tr in load["transitions"]][-1] == "finished"
    human = client.ff("runs", "show", run_id).stdout
    assert "making 4 numbers" in human and "→ finished" in human

    logs = client.json("runs", "logs", run_id, "--step", "load")
    assert [x["message"] for x in logs] == ["making 4 numbers", "done"]
    wrong = client.ff("runs", "logs", "f" * 32, check=2)
    assert "HTTP 404" in wrong.stderr and "no run matches" in wrong.stderr

    arts = client.json("artifacts", "list", "--run", run_id)
    assert sorted(a["name"] for a in arts) == ["summary", "xs", "ys"]
    summary = client.json("artifacts", "show", "summary")
    assert summary["run_id"] == run_id and summary["kind"] == "json"
    tree = client.json("lineage", "summary")
    assert tree["name"] == "summary"
    assert tree["parents"][0]["name"] == "ys"
    assert tree["parents"][0]["parents"][0]["name"] == "xs"
    assert "xs:" in client.ff("lineage", "summary").stdout

    assert client.json("models", "list") == {"items": []}
    tools = {t["name"] for t in client.json("tools", "list")}
    assert {"numbers", "scale", "total", "slow"} <= tools
    assert client.json("tools", "show", "numbers")["type"] == "database-adapter"

    # Nothing of this touched a local catalog.
    assert not (client.root / ".flowfed").exists()
    assert list(client.root.iterdir()) == []


def test_validate_asks_the_server_with_its_tools(server: Server, client: Client) -> None:
    (client.root / "flow.yaml").write_text(textwrap.dedent(FLOW))
    ok = client.ff("validate", "flow.yaml")
    assert "valid" in ok.stdout and "3 tasks" in ok.stdout
    bad = FLOW.replace("tool: scale", "tool: scael")
    (client.root / "bad.yaml").write_text(textwrap.dedent(bad))
    res = client.ff("validate", "bad.yaml", "--json", check=2)
    error = next(e for e in json.loads(res.stdout)["errors"] if e.get("field") == "tool")
    assert error["message"] == "unknown tool 'scael'" and error["file"] == "bad.yaml"
    assert error["line"] == 9 and "did you mean 'scale'" in error["hint"]
    refused = client.ff("validate", "flow.yaml", "--import", "x.py", check=2)
    assert "--import only applies locally" in refused.stderr
    assert not (client.root / ".flowfed").exists()


def test_flows_push_list_show_delete(server: Server, client: Client) -> None:
    flow = client.root / "chain.yaml"
    flow.write_text(textwrap.dedent(FLOW))
    first = client.json("flows", "push", str(flow))
    assert first["name"] == "remote chain" and first["version"] >= 1
    second = client.ff("flows", "push", str(flow)).stdout
    assert f"stored flow 'remote chain' version {first['version'] + 1}" in second

    names = {f["name"]: f for f in client.json("flows", "list")}
    assert names["remote chain"]["version"] == first["version"] + 1
    assert names["remote chain"]["steps"] == 3

    shown = client.json("flows", "show", "remote chain", "--version", str(first["version"]))
    assert shown["version"] == first["version"] and "tool: numbers" in shown["source"]
    assert shown["versions"][-2:] == [first["version"], first["version"] + 1]
    text = client.ff("flows", "show", "remote chain").stdout
    assert "3 steps" in text and "tool: total" in text

    # A trigger that starts the flow keeps it from being deleted.
    trig = {"name": "keep-chain", "flow": "remote chain", "schedule": {"every": 3600}}
    assert server.client().post("/api/v1/triggers", json=trig).status_code == 201
    refused = client.ff("flows", "delete", "remote chain", check=2)
    assert "HTTP 409" in refused.stderr and "keep-chain" in refused.stderr
    # ...but an older version can go.
    client.ff("flows", "delete", "remote chain", "--version", str(first["version"]))
    assert server.client().delete("/api/v1/triggers/keep-chain").status_code == 204
    gone = client.ff("flows", "delete", "remote chain").stdout
    assert "deleted flow 'remote chain'" in gone
    assert "remote chain" not in {f["name"] for f in client.json("flows", "list")}
    missing = client.ff("flows", "show", "remote chain", check=2)
    assert "HTTP 404" in missing.stderr and "no stored flow 'remote chain'" in missing.stderr
    assert not (client.root / ".flowfed").exists()


def test_runs_cancel_stops_a_running_run(server: Server, client: Client) -> None:
    run_id = _start(server, SLOW)
    res = client.ff("runs", "cancel", run_id[:12])
    assert f"run {run_id} is being cancelled" in res.stdout
    run = server.wait_run(run_id)
    assert run["status"] == "cancelled"
    assert run["tasks"][0]["state"] == "cancelled"
    again = client.ff("runs", "cancel", run_id, check=2)
    assert "HTTP 409" in again.stderr and "not running" in again.stderr


def test_run_on_a_server_refuses_local_only_options(server: Server, client: Client) -> None:
    (client.root / "flow.yaml").write_text(textwrap.dedent(FLOW))
    res = client.ff("run", "flow.yaml", "--simulate", "--workers", "3", check=2)
    assert "--workers, --simulate only apply to a local run" in res.stderr
    ran = client.ff("run", "flow.yaml", "--no-cache", "--json")
    assert json.loads(ran.stdout)["status"] == "success"
    assert not (client.root / ".flowfed").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["db", "upgrade"],
        ["auth", "token", "create", "--name", "x"],
        ["auth", "client", "revoke", "ffc_x"],
        ["node", "audit"],
        ["server", "--port", "0"],
    ],
)
def test_a_command_without_a_server_form_refuses_the_server(
    client: Client, args: list[str]
) -> None:
    res = client.ff(*args, check=2)
    assert f"`flowfed {' '.join(args[: 2 if args[0] != 'server' else 1])}" in res.stderr
    assert "has no server form" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (client.root / ".flowfed").exists()


def test_listings_of_credentials_come_from_the_server(server: Server, client: Client) -> None:
    tokens = client.json("auth", "token", "list")
    assert "tests" in {t["name"] for t in tokens}
    assert "token" not in tokens[0] and not (client.root / ".flowfed").exists()


def test_an_unreachable_server_or_a_bad_token_is_one_line(client: Client) -> None:
    client.env["FLOWFED_SERVER"] = "http://127.0.0.1:9"
    res = client.ff("artifacts", "list", check=2)
    assert res.stderr.startswith("error: cannot reach http://127.0.0.1:9")
    client.env["FLOWFED_SERVER"] = client.server.url
    res = client.ff("--token", "ffu_bad.bad", "runs", "list", check=2, token=False)
    assert res.stderr.startswith("error: HTTP 401") and "--token" in res.stderr
    assert "Traceback" not in res.stderr and not (client.root / ".flowfed").exists()


def test_nodes_are_added_and_removed_through_the_server(server: Server, client: Client) -> None:
    out = client.root / "node.json"
    client.ff("nodes", "add", "hospital-r", "--out", str(out))
    creds = json.loads(out.read_text())
    assert creds["name"] == "hospital-r" and creds["token"].startswith("ffn_")
    assert creds["server"] == server.url  # the global --server, unless --server is given
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    listed = {n["name"] for n in client.json("nodes", "list")}
    assert "hospital-r" in listed
    taken = client.ff("nodes", "add", "hospital-r", check=2)
    assert "HTTP 409" in taken.stderr and "exists already" in taken.stderr
    both = client.ff("nodes", "add", "x", "--database-url", "sqlite:///x.db", check=2)
    assert "not both" in both.stderr
    client.ff("nodes", "remove", "hospital-r")
    assert "hospital-r" not in {n["name"] for n in client.json("nodes", "list")}
    gone = client.ff("nodes", "remove", "hospital-r", check=2)
    assert "HTTP 404" in gone.stderr
    user = server.new_token("--name", "plain", "--role", "user")["token"]
    refused = client.ff("--token", user, "nodes", "add", "hospital-s", check=2, token=False)
    assert "HTTP 403" in refused.stderr
    assert not (client.root / ".flowfed").exists()
