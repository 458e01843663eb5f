"""Restart safety: kill -9 the server mid-run, start it again, and the run goes on."""

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

from tests.events_ws.conftest import TOOLS, Server, _start, broker_url

FLOW = """
name: Restartable Flow
imports: [tools.py]
steps:
  - {name: Prepare, tool: ticker, params: {n: 1, pause: 0.0}, outputs: [x0]}
  - {name: Train, tool: double_slowly, inputs: {x: x0}, outputs: [x], retries: 1}
  - {name: Package, tool: double, inputs: {x: x}, outputs: [y]}
"""

SLOW = """

@tool(version="1", type="data-transformation")
def double_slowly(x: int, ctx: Context) -> int:
    for i in range(30):
        ctx.progress(i + 1, 30, f"Round {i + 1}/30")
        time.sleep(0.1)
    return 2 * x
"""


@pytest.mark.parametrize("database", ["sqlite", "postgresql-two-servers"])
def test_a_run_survives_kill_9_of_its_server(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    (root / "tools.py").write_text(textwrap.dedent(TOOLS) + SLOW)
    (root / "flow.yaml").write_text(textwrap.dedent(FLOW).lstrip())
    if database == "sqlite":
        db_url = f"sqlite:///{tmp_path / 'srv.db'}"
        survivors = 1
    else:
        from tests.conftest import _reset_pg

        db_url = request.getfixturevalue("pg_database")
        _reset_pg(db_url)
        survivors = 2  # both race to adopt the run; exactly one may win
    env = {**os.environ, "FLOWFED_DATABASE_URL": db_url, "FLOWFED_RUN_LEASE_S": "1.5"}
    for args in (["db", "upgrade"], ["auth", "token", "create", "--name", "t", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "flowfed", *args],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    token = json.loads(done.stdout)["token"]
    headers = {"Authorization": f"Bearer {token}"}

    url, proc = _start(root, env, db_url, "memory://")
    first = Server(url, token, proc, root, env)
    with first.client() as c:
        resp = c.post("/api/v1/runs", json={"source": (root / "flow.yaml").read_text()})
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["run_id"]
        deadline = time.monotonic() + 30
        while True:
            run = c.get(f"/api/v1/runs/{run_id}").json()
            train = [t for t in run["tasks"] if t["step"] == "Train"]
            if train and train[0]["state"] == "running":
                break
            assert time.monotonic() < deadline, run
            time.sleep(0.05)
    before = {t["step"]: t for t in run["tasks"]}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    # Two servers on one database share a broker (a memory:// one refuses to share it).
    broker = "memory://" if survivors == 1 else broker_url("redis")
    restarted = [_start(root, env, db_url, broker) for _ in range(survivors)]
    url = restarted[-1][0]
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            while True:
                run = c.get(f"/api/v1/runs/{run_id}").json()
                if run["status"] != "running":
                    break
                assert time.monotonic() < deadline, run
                time.sleep(0.1)
            assert run["status"] == "success", run
            tasks = {t["step"]: t for t in run["tasks"]}
            # The finished step stayed finished: same task, one attempt, its artifact kept.
            assert tasks["Prepare"]["id"] == before["Prepare"]["id"]
            assert tasks["Prepare"]["attempt"] == 1
            assert len([t for t in run["tasks"] if t["step"] == "Prepare"]) == 1
            # The interrupted step ran again under its retry policy.
            train = c.get(f"/api/v1/tasks/{tasks['Train']['id']}").json()
            moves = [(t["attempt"], t["dst"], t.get("detail")) for t in train["transitions"]]
            assert (1, "error", "interrupted: the server running this task stopped") in moves
            assert moves[-1][:2] == (2, "finished")
            # Adopted once: one interruption, one second attempt, never a third.
            assert [m[:2] for m in moves].count((2, "finished")) == 1
            assert max(m[0] for m in moves) == 2
            assert tasks["Package"]["state"] == "finished"
        # The event log goes on where it stopped: no gap, no duplicate, the restart shown.
        from websockets.sync.client import connect

        ws_url = url.replace("http://", "ws://") + f"/api/v1/runs/{run_id}/events"
        with connect(ws_url, additional_headers=headers) as ws:
            events = [json.loads(m) for m in ws]
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        resumed = [e for e in events if e["kind"] == "run" and e["payload"].get("resumed")]
        assert len(resumed) == 1
        assert events[-1]["payload"]["status"] == "success"
    finally:
        for _, p in restarted:
            p.terminate()
        for _, p in restarted:
            p.wait(timeout=10)


NO_RETRIES = """
name: Resumable Flow
imports: [tools.py]
steps:
  - {name: Prepare, tool: ticker, params: {n: 1, pause: 0.0}, outputs: [x0]}
  - {name: Train, tool: double_slowly, inputs: {x: x0}, outputs: [x]}
  - {name: Package, tool: double, inputs: {x: x}, outputs: [y]}
"""


def test_an_interrupted_task_without_retries_is_resumed_once(tmp_path: Path) -> None:
    """kill -9 is the platform's failure, not the tool's: the step has no `retries:`, and
    the run still goes on, its interrupted task run again once on the platform's account."""
    root = tmp_path / "srv"
    root.mkdir()
    (root / "tools.py").write_text(textwrap.dedent(TOOLS) + SLOW)
    (root / "flow.yaml").write_text(textwrap.dedent(NO_RETRIES).lstrip())
    db_url = f"sqlite:///{tmp_path / 'srv.db'}"
    env = {**os.environ, "FLOWFED_DATABASE_URL": db_url, "FLOWFED_RUN_LEASE_S": "1.5"}
    for args in (["db", "upgrade"], ["auth", "token", "create", "--name", "t", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "flowfed", *args],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    token = json.loads(done.stdout)["token"]
    headers = {"Authorization": f"Bearer {token}"}

    url, proc = _start(root, env, db_url, "memory://")
    with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
        resp = c.post("/api/v1/runs", json={"source": (root / "flow.yaml").read_text()})
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["run_id"]
        deadline = time.monotonic() + 30
        while True:
            run = c.get(f"/api/v1/runs/{run_id}").json()
            train = [t for t in run["tasks"] if t["step"] == "Train"]
            if train and train[0]["state"] == "running":
                break
            assert time.monotonic() < deadline, run
            time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    url, proc = _start(root, env, db_url, "memory://")
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            deadline = time.monotonic() + 60
            while True:
                run = c.get(f"/api/v1/runs/{run_id}").json()
                if run["status"] != "running":
                    break
                assert time.monotonic() < deadline, run
                time.sleep(0.1)
            assert run["status"] == "success", run
            tasks = {t["step"]: t for t in run["tasks"]}
            assert tasks["Package"]["state"] == "finished"
            train = c.get(f"/api/v1/tasks/{tasks['Train']['id']}").json()
            moves = [
                (t["attempt"], t["src"], t["dst"], t.get("detail")) for t in train["transitions"]
            ]
            interrupted = "interrupted: the server running this task stopped"
            # Attempt 1 was interrupted; the platform started attempt 2 itself and said so.
            assert (1, "running", "error", interrupted) in moves
            assert (2, "error", "pending", f"resumed: {interrupted}") in moves
            assert moves[-1][:3] == (2, "running", "finished")
            assert max(m[0] for m in moves) == 2
            # The task's last word is its success, not the interruption.
            assert train["state"] == "finished" and not train.get("error")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
