"""The run, step and task JSON the dashboard reads (issue 22, parts 1, 5 and 6), from a
real ``flowfed server`` over HTTP and its run-event WebSocket.

Figures are compared with each other and with bounds, never with a clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowfed.cli.remote import watch
from tests.dashboard_data.conftest import BURN_TOOLS, REPORT_TOOLS
from tests.server.conftest import TOOLS, Server, start_server, stop

FLOW = """
name: burn
steps:
  - name: Burn
    type: process
    tool: burn
    params: {seconds: 4, mb: 60}
    outputs: [out]
  - name: Sum up
    type: output
    tool: total
    inputs: {xs: numbers}
    outputs: [report]
  - name: Numbers
    tool: numbers
    outputs: [numbers]
"""

FAILING = """
name: failing
steps:
  - name: Numbers
    tool: numbers
    outputs: [numbers]
  - name: Broken
    tool: flaky
    inputs: {xs: numbers}
    params: {marker: MARKER}
    outputs: [fixed]
  - name: Total
    tool: total
    inputs: {xs: fixed}
    outputs: [report]
"""


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    s = start_server(tmp_path / "srv", f"sqlite:///{tmp_path / 'srv' / 'flowfed.db'}",
                     tools=TOOLS + BURN_TOOLS + REPORT_TOOLS)  # fmt: skip
    yield s
    stop(s)


def _start(srv: Server, source: str) -> str:
    r = srv.client().post("/api/v1/runs", json={"source": source})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


def test_resources_stream_while_running_and_stay_in_the_task_json(srv: Server) -> None:
    api = srv.client()
    run_id = _start(srv, FLOW)
    live: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    while True:
        run = api.get(f"/api/v1/runs/{run_id}").json()
        live += [t for t in run["tasks"] if t["state"] == "running" and t["resources"]]
        if run["status"] != "running":
            break
        assert time.monotonic() < deadline, "the run never ended"
        time.sleep(0.1)
    assert run["status"] == "success", run
    assert live, "no task showed its resources while it ran"
    assert all(t["resources"]["wall_s"] >= 0 for t in live)

    burn = next(t for t in run["tasks"] if t["step"] == "Burn")
    res = burn["resources"]
    assert set(res) == {"wall_s", "cpu_s", "peak_rss_mb", "progress"}
    assert res["cpu_s"] > 0.05 and res["peak_rss_mb"] >= 54, res
    assert res["progress"] == {"done": 5000, "total": 5000, "unit": "images"}
    # The same task through /tasks/{id}, and the step's copy of it.
    one = api.get(f"/api/v1/tasks/{burn['id']}").json()
    assert one["resources"] == res
    assert one["waiting_on"] is None
    assert one["duration_s"] == pytest.approx(one["ended_at"] - one["started_at"], abs=1e-3)
    step = next(s for s in run["steps"] if s["name"] == "Burn")
    assert step["tasks"][0]["resources"] == res

    # The run-event WebSocket carried samples while it ran and the final figures last.
    events: list[dict[str, Any]] = []
    watch(srv.url, srv.token, run_id, on_event=events.append)
    mine = [e for e in events if e["task_id"] == burn["id"]]
    samples = [e for e in mine if e["kind"] == "resources"]
    assert len(samples) >= 2, [e["kind"] for e in mine]
    for e in samples:
        assert {"task_id", "wall_s", "cpu_s", "peak_rss_mb", "progress"} <= set(e["payload"])
        assert e["payload"]["task_id"] == burn["id"]
    last = samples[-1]["payload"]
    assert {k: last[k] for k in res} == res
    ended = next(e for e in mine if e["kind"] == "transition" and e["payload"]["dst"] == "finished")
    assert samples[0]["id"] < ended["id"]
    walls = [e["payload"]["wall_s"] for e in samples]
    assert walls == sorted(walls)

    # The CLI with --server prints them.
    out = srv.ff("--server", srv.url, "--token", srv.token, "runs", "show", run_id).stdout
    assert "5,000/5,000 images" in out, out


def test_runs_steps_and_tasks_carry_times_and_progress(srv: Server) -> None:
    api = srv.client()
    run_id = _start(srv, FLOW)
    run = srv.wait_run(run_id, timeout=120)
    assert run["status"] == "success"
    assert run["started_at"] == run["created_at"]
    assert run["duration_s"] == pytest.approx(run["ended_at"] - run["created_at"], abs=1e-3)
    for step in run["steps"]:
        starts = [t["started_at"] for t in step["tasks"]]
        ends = [t["ended_at"] for t in step["tasks"]]
        assert step["started_at"] == min(starts)
        assert step["ended_at"] == max(ends)
        assert step["duration_s"] == pytest.approx(max(ends) - min(starts), abs=1e-3)
        assert step["progress"] == {"done": 1, "total": 1, "unit": "tasks"}
        assert step["stalled"] is False
        for t in step["tasks"]:
            assert t["duration_s"] == pytest.approx(t["ended_at"] - t["started_at"], abs=1e-3)
    listed = api.get("/api/v1/runs").json()["items"]
    mine = next(r for r in listed if r["id"] == run_id)
    assert mine["duration_s"] == pytest.approx(run["duration_s"], abs=1e-3)
    assert mine["started_at"] == run["started_at"]
    text = srv.ff("--server", srv.url, "--token", srv.token, "runs", "list").stdout
    assert "duration" in text and run_id[:12] in text


def test_every_step_is_final_when_a_run_fails(srv: Server, tmp_path: Path) -> None:
    marker = tmp_path / "broken"
    marker.write_text("x")
    run_id = _start(srv, FAILING.replace("MARKER", str(marker)))
    run = srv.wait_run(run_id, timeout=120)
    assert run["status"] == "failed"
    status = {s["name"]: s["status"] for s in run["steps"]}
    assert status == {"Numbers": "completed", "Broken": "failed", "Total": "skipped"}, status
    broken = next(s for s in run["steps"] if s["name"] == "Broken")
    assert broken["progress"] == {"done": 1, "total": 1, "unit": "tasks"}
    assert broken["ended_at"] is not None
    out = srv.ff("--server", srv.url, "--token", srv.token, "runs", "show", run_id).stdout
    assert "failed" in out


def test_run_with_server_prints_the_results_table(srv: Server) -> None:
    (srv.root / "report.yaml").write_text(
        "name: with-report\nreport: summary\nsteps:\n"
        "  - name: Results\n    tool: site_table\n    outputs: [summary]\n"
    )
    res = srv.ff("--server", srv.url, "--token", srv.token, "run", "report.yaml")
    out = res.stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["hospital-a:breast"] == ["0.9737", "0.9961", "38"], out
    assert rows["hospital-b:breast"] == ["0.9412", "0.9850", "34"], out
    pooled = next(line for line in out.splitlines() if "pooled (federated)" in line)
    assert pooled.split()[2:] == ["0.9583", "0.9903", "72"], out
