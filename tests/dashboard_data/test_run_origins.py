"""Where a run came from (issue 22, part 10): a retry names its original run, a run a
trigger started names the trigger, and a trigger's last fire shows how its run ended.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import Server, stop
from tests.triggers.conftest import T0, Clock, add_flow, add_trigger, launch

FAILING = """
name: fails-once
steps:
  - name: Numbers
    tool: numbers
    outputs: [numbers]
  - name: Broken
    tool: flaky
    inputs: {xs: numbers}
    params: {marker: MARKER}
    outputs: [fixed]
"""


@pytest.fixture
def tserver(tmp_path: Path) -> Iterator[tuple[Server, Clock]]:
    clock = Clock(tmp_path / "clock")
    s = launch(tmp_path / "srv", f"sqlite:///{tmp_path / 'srv' / 'flowfed.db'}", clock)
    yield s, clock
    stop(s)


def test_a_retry_names_its_original_run(tserver: tuple[Server, Clock], tmp_path: Path) -> None:
    srv, _ = tserver
    api = srv.client()
    marker = tmp_path / "broken"
    marker.write_text("x")
    r = api.post("/api/v1/runs", json={"source": FAILING.replace("MARKER", str(marker))})
    first = srv.wait_run(r.json()["run_id"])
    assert first["status"] == "failed" and first["retry_of"] is None
    marker.unlink()  # "fix" the tool
    r = api.post(f"/api/v1/runs/{first['id']}/retry")
    assert r.status_code == 202, r.text
    again = srv.wait_run(r.json()["run_id"])
    assert again["status"] == "success"
    assert again["retry_of"] == first["id"]
    listed = {x["id"]: x for x in api.get("/api/v1/runs").json()["items"]}
    assert listed[again["id"]]["retry_of"] == first["id"]
    out = srv.ff("--server", srv.url, "--token", srv.token, "runs", "show", again["id"]).stdout
    assert f"retry of {first['id']}" in " ".join(out.split()), out


def test_a_trigger_run_names_its_trigger_and_the_last_fire_its_outcome(
    tserver: tuple[Server, Clock], tmp_path: Path
) -> None:
    srv, clock = tserver
    api = srv.client()
    marker = tmp_path / "broken"
    marker.write_text("x")
    add_flow(srv, FAILING.replace("MARKER", str(marker)))
    add_trigger(srv, {"name": "minutely", "flow": "fails-once", "schedule": {"cron": "* * * * *"}})
    clock.set(T0 + 30.5)  # the first tick
    deadline = time.monotonic() + 60
    while True:
        shown = api.get("/api/v1/triggers/minutely").json()
        fire = shown.get("last_fire")
        if fire and fire.get("run_id"):
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)
    run = srv.wait_run(fire["run_id"])
    assert run["status"] == "failed"
    assert run["trigger"] == "minutely"
    shown = api.get("/api/v1/triggers/minutely").json()
    # The fire started its run; what came of it is the run's end, not "started".
    assert shown["last_fire"]["status"] == "started"
    assert shown["last_fire"]["run_status"] == "failed"
    assert shown["last_fire"]["outcome"] == "failed"
    fires = api.get("/api/v1/triggers/minutely/history").json()
    assert fires[0]["outcome"] == "failed" and fires[0]["run_id"] == run["id"]
    listed = {x["id"]: x for x in api.get("/api/v1/runs").json()["items"]}
    assert listed[run["id"]]["trigger"] == "minutely"
