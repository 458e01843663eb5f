"""Graceful restarts and several servers (issue 20.3), with real server processes on
PostgreSQL: SIGTERM drains and hands runs over; a ``memory://`` server refuses to share
its database; an ended run ends every watch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.events_ws.conftest import TOOLS, _start, broker_url

SLOW = """

@tool(version="1", type="data-transformation")
def double_slowly(x: int, ctx: Context, *, seconds: float = 3.0) -> int:
    steps = int(seconds * 10)
    for i in range(steps):
        ctx.progress(i + 1, steps, f"Round {i + 1}/{steps}")
        time.sleep(0.1)
    return 2 * x
"""

FLOW = """
name: Drained Flow
imports: [tools.py]
config: {seconds: 3.0}
steps:
  - {name: Prepare, tool: ticker, params: {n: 1, pause: 0.0}, outputs: [x0]}
  - {name: Train, tool: double_slowly, inputs: {x: x0}, outputs: [x],
     params: {seconds: "${config.seconds}"}, retries: 1}
  - {name: Package, tool: double, inputs: {x: x}, outputs: [y]}
"""


def _project(tmp_path: Path, db_url: str) -> tuple[Path, dict[str, str], str]:
    root = tmp_path / "srv"
    root.mkdir()
    (root / "tools.py").write_text(textwrap.dedent(TOOLS) + SLOW)
    (root / "flow.yaml").write_text(textwrap.dedent(FLOW).lstrip())
    env = {**os.environ, "FLOWFED_DATABASE_URL": db_url, "FLOWFED_RUN_LEASE_S": "60"}
    env.pop("FLOWFED_SERVER", None)
    env.pop("FLOWFED_TOKEN", None)
    for args in (["db", "upgrade"], ["auth", "token", "create", "--name", "t", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "flowfed", *args],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    return root, env, json.loads(done.stdout)["token"]


def _wait_state(c: httpx.Client, run_id: str, step: str, state: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        run = c.get(f"/api/v1/runs/{run_id}").json()
        tasks = [t for t in run["tasks"] if t["step"] == step]
        if tasks and tasks[-1]["state"] == state:
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


def _wait_end(c: httpx.Client, run_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = c.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] != "running":
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.1)


def _events(url: str, token: str, run_id: str) -> list[dict]:
    from websockets.sync.client import connect

    ws_url = url.replace("http://", "ws://") + f"/api/v1/runs/{run_id}/events"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        return [json.loads(m) for m in ws]


@pytest.mark.parametrize("drain", ["tasks-finish", "timeout"])
def test_sigterm_drains_and_another_server_resumes_the_run(
    drain: str, tmp_path: Path, pg_database: str
) -> None:
    from tests.conftest import _reset_pg

    _reset_pg(pg_database)
    root, env, token = _project(tmp_path, pg_database)
    headers = {"Authorization": f"Bearer {token}"}
    timeout = "30" if drain == "tasks-finish" else "0.5"
    url, proc = _start(root, env, pg_database, "memory://", "--drain-timeout", timeout)
    with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
        resp = c.post("/api/v1/runs", json={"source": (root / "flow.yaml").read_text()})
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["run_id"]
        _wait_state(c, run_id, "Train", "running")
        proc.send_signal(signal.SIGTERM)
        if drain == "tasks-finish":
            # Draining, still serving: no new work is taken, and /ready says so.
            resp = c.post("/api/v1/runs", json={"source": (root / "flow.yaml").read_text()})
            assert resp.status_code == 503, resp.text
            assert resp.json()["type"] == "urn:flowfed:problem:server-draining"
            assert resp.headers["retry-after"] == "1"
            ready = c.get("/ready")
            assert ready.status_code == 503 and ready.json()["draining"] is True
    proc.wait(timeout=60)
    log = (root / f"server-{url.rsplit(':', 1)[1]}.log").read_text()
    assert "handed over 1 run(s)" in log, log

    # Nothing ran on after the first server stopped: the run waits, neither failed nor
    # cancelled, with its lease released.
    import psycopg

    with psycopg.connect(pg_database.replace("+psycopg", "")) as conn:
        status, lease = conn.execute(
            "SELECT status, lease_until FROM runs WHERE id = %s", (run_id,)
        ).fetchone()
    assert status == "running" and lease == 0.0

    url2, proc2 = _start(root, env, pg_database, "memory://")
    try:
        with httpx.Client(base_url=url2, headers=headers, timeout=30) as c:
            run = _wait_end(c, run_id)
            assert run["status"] == "success", run
            tasks = {t["step"]: t for t in run["tasks"]}
            train = c.get(f"/api/v1/tasks/{tasks['Train']['id']}").json()
            moves = [(t["attempt"], t["dst"], t.get("detail")) for t in train["transitions"]]
            if drain == "tasks-finish":
                # Train ended on the draining server, once; Package ran on the second.
                assert [m[:2] for m in moves][-1] == (1, "finished"), moves
                assert not [m for m in moves if m[1] == "error"], moves
            else:
                # Cut off at the drain timeout: Train runs again where it was adopted.
                assert (1, "error") in [m[:2] for m in moves], moves
                assert moves[-1][1] == "finished", moves
            assert tasks["Package"]["state"] == "finished"
            assert c.get("/api/v1/artifacts/y:1/content").json() == 4
        events = _events(url2, token, run_id)
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        assert len([e for e in events if e["payload"].get("resumed")]) == 1
        assert events[-1]["payload"]["status"] == "success"
        assert not [e for e in events if e["payload"].get("status") == "cancelled"]
    finally:
        proc2.terminate()
        proc2.wait(timeout=60)


def _server_exits(root: Path, env: dict[str, str], db_url: str, broker: str) -> str:
    """Start ``flowfed server`` expecting it to refuse; its output."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowfed",
            "server",
            "--port",
            "0",
            "--database-url",
            db_url,
            "--broker-url",
            broker,
            "--import",
            str(root / "tools.py"),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_a_memory_broker_server_refuses_to_share_its_database(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if database == "postgresql":
        from tests.conftest import _reset_pg

        db_url = request.getfixturevalue("pg_database")
        _reset_pg(db_url)
    else:
        db_url = f"sqlite:///{tmp_path / 'flowfed.db'}"
    root, env, _ = _project(tmp_path, db_url)
    redis = broker_url("redis")

    _, first = _start(root, env, db_url, "memory://")
    try:
        out = _server_exits(root, env, db_url, "memory://")
        assert "another flowfed server is running on this database" in out
        assert "--broker-url" in out
        assert "Traceback" not in out
        # A real broker does not help while the first keeps its in-process one.
        out = _server_exits(root, env, db_url, redis)
        assert "memory://" in out and "--broker-url" in out
    finally:
        first.terminate()
        first.wait(timeout=60)

    # Servers sharing a broker may share the database; a memory:// one still may not join.
    _, a = _start(root, env, db_url, redis)
    _, b = _start(root, env, db_url, redis)
    try:
        out = _server_exits(root, env, db_url, "memory://")
        assert "--broker-url" in out
    finally:
        for p in (a, b):
            p.terminate()
        for p in (a, b):
            p.wait(timeout=60)
    # The lock goes with its process, even one killed with SIGKILL.
    _, c = _start(root, env, db_url, "memory://")
    c.kill()
    c.wait(timeout=10)
    _, d = _start(root, env, db_url, "memory://")
    d.terminate()
    d.wait(timeout=60)


def test_an_ended_run_ends_every_watch_even_one_its_bus_never_heard(
    tmp_path: Path, pg_database: str
) -> None:
    """Two servers on one database with different broker prefixes (a misconfiguration the
    lock cannot see): the watch through the second still ends when the run does."""
    from tests.conftest import _reset_pg

    _reset_pg(pg_database)
    root, env, token = _project(tmp_path, pg_database)
    headers = {"Authorization": f"Bearer {token}"}
    url_a, a = _start(root, env, pg_database, broker_url("redis"))
    url_b, b = _start(root, env, pg_database, broker_url("redis"))
    try:
        with httpx.Client(base_url=url_a, headers=headers, timeout=30) as c:
            resp = c.post(
                "/api/v1/runs",
                json={"source": (root / "flow.yaml").read_text(), "params": {"seconds": 1.0}},
            )
            assert resp.status_code == 202, resp.text
            run_id = resp.json()["run_id"]
        watch = subprocess.run(
            [sys.executable, "-m", "flowfed", "runs", "watch", run_id],
            cwd=root,
            env={**env, "FLOWFED_SERVER": url_b, "FLOWFED_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert watch.returncode == 0, watch.stdout + watch.stderr
        assert "success" in watch.stdout, watch.stdout
        events = _events(url_b, token, run_id)
        assert events[-1]["payload"]["status"] == "success"
    finally:
        for p in (a, b):
            p.terminate()
        for p in (a, b):
            p.wait(timeout=60)
