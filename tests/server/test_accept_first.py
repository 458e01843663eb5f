"""Runs give way to a burst of submissions (``FLOWFED_ACCEPT_FIRST_S``), through REST.

A server that starts each accepted run at once makes every submission still waiting for
its 202 compete with the runs already accepted. So a recorded run waits while
submissions are in flight, for at most ``FLOWFED_ACCEPT_FIRST_S`` seconds. An in-process
server lets the test hold a submission open (``RunManager.accepting``) for as long as it
likes, which no HTTP client can do reliably.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import flowfed.tools.library  # noqa: F401  (flowfed.csv, for the in-process server)
from flowfed.db import Database
from flowfed.server.auth import create_token
from flowfed.server.embedded import EmbeddedServer, start_embedded_server

FLOW = """\
name: accept-first
steps:
  - {name: load, tool: flowfed.csv, params: {path: "PATH"}, outputs: [table]}
"""


@pytest.fixture
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[EmbeddedServer, httpx.Client, str]]:
    monkeypatch.setenv("FLOWFED_ACCEPT_FIRST_S", "600")  # far longer than any wait here
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    db = Database(url)
    db.ensure_schema(auto_upgrade=True)
    token = create_token(db, "tester").token
    db.close()
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    srv = start_embedded_server(url, str(tmp_path / "artifacts"))
    client = httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    try:
        yield srv, client, FLOW.replace("PATH", str(tmp_path / "rows.csv"))
    finally:
        client.close()
        srv.stop()


def _run(client: httpx.Client, run_id: str) -> dict[str, Any]:
    res = client.get(f"/api/v1/runs/{run_id}")
    assert res.status_code == 200, res.text
    return res.json()


def _wait_ended(client: httpx.Client, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (run := _run(client, run_id))["status"] == "running":
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    return run


def test_a_run_waits_while_submissions_are_in_flight_then_runs(
    served: tuple[EmbeddedServer, httpx.Client, str],
) -> None:
    srv, client, flow = served
    manager = srv.app.state.runs
    with manager.accepting():  # another submission is being accepted
        res = client.post("/api/v1/runs", json={"source": flow})
        assert res.status_code == 202, res.text
        run_id = res.json()["run_id"]
        time.sleep(0.5)  # ample for a one-task run that was not held back
        held = _run(client, run_id)
        # Recorded and visible, but not one task planned into the catalog yet.
        assert held["status"] == "running" and held["tasks"] == [], held
    run = _wait_ended(client, run_id)
    assert run["status"] == "success", run
    assert [t["state"] for t in run["tasks"]] == ["finished"]


def test_a_steady_stream_of_submissions_delays_a_run_by_the_limit_only(
    served: tuple[EmbeddedServer, httpx.Client, str],
) -> None:
    srv, client, flow = served
    manager = srv.app.state.runs
    manager.accept_first_s = 0.2  # the limit (FLOWFED_ACCEPT_FIRST_S), set low here
    with manager.accepting():  # submissions never stop coming
        run_id = client.post("/api/v1/runs", json={"source": flow}).json()["run_id"]
        run = _wait_ended(client, run_id)
    assert run["status"] == "success", run


def test_a_lone_submission_is_not_held_back(
    served: tuple[EmbeddedServer, httpx.Client, str],
) -> None:
    _, client, flow = served
    run_id = client.post("/api/v1/runs", json={"source": flow}).json()["run_id"]
    # Nothing else in flight: the run ends although the limit is 600 s.
    assert _wait_ended(client, run_id)["status"] == "success"
