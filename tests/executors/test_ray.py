"""`flowfed run --executor ray://local` end to end on a real local Ray.

One Ray for the module (it takes seconds to start): this process starts it with
``ray.init(num_cpus=2)``; each ``flowfed run`` subprocess joins it through
``$RAY_ADDRESS``, which is what ``ray://local`` does when that variable is set.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from tests.cli.conftest import Project, by_step
from tests.executors.flows import (
    EXPECTED_TOTAL,
    FLOW,
    error_shape,
    load_logs,
    make,
    statuses,
    with_step,
)

URL = "ray://local?inline_max=1024"


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture
def rproject(project: Project, ray_address: str) -> Project:
    project.env["RAY_ADDRESS"] = ray_address
    return project


def test_flow_runs_as_ray_tasks_with_artifacts_lineage_telemetry_and_cache(
    rproject: Project,
) -> None:
    make(rproject)
    res = rproject.ff("run", "flow.yaml", "--executor", URL, "--json", check=0)
    report = res.json()
    assert report["status"] == "success"
    assert set(statuses(report).values()) == {"finished"}
    assert by_step(report)["sum"]["tasks"][0]["metrics"] == {"total": EXPECTED_TOTAL}
    assert {a["name"] for a in report["artifacts"]} == {"raw", "scaled", "score"}

    # The call ran as a Ray task in a Ray worker process, not in `flowfed run`.
    line = next(x for x in load_logs(rproject, report["run_id"]) if x.startswith("pid="))
    assert "where=ray-task " in line
    assert int(line.split()[0].removeprefix("pid=")) != res.pid

    tree = rproject.ff("lineage", "score", "--json", check=0).json()
    assert [p["name"] for p in tree["parents"]] == ["scaled"]

    again = rproject.run_json("flow.yaml", "--executor", URL)
    assert set(statuses(again).values()) == {"cached"}
    assert {a["id"] for a in again["artifacts"]} == {a["id"] for a in report["artifacts"]}


def test_a_failed_attempt_on_ray_is_retried(rproject: Project) -> None:
    flow = with_step(
        FLOW,
        "flaky",
        f"    params: {{marker: {rproject.root / 'marker'}}}\n    retries: 2\n"
        "    retry_backoff: 0.05\n",
    )
    make(rproject, flow)
    report = rproject.run_json("flow.yaml", "--executor", URL)
    task = by_step(report)["sum"]["tasks"][0]
    assert task["status"] == "finished" and task["attempt"] == 2


def test_a_failing_tool_on_ray_reports_the_same_error_as_on_threads(rproject: Project) -> None:
    make(rproject, with_step(FLOW, "explode"))
    on_ray = rproject.run_json("flow.yaml", "--executor", URL, check=1)
    on_threads = rproject.run_json("flow.yaml", "--no-cache", check=1)
    shape = error_shape(on_ray)
    assert shape == error_shape(on_threads)
    assert shape["message"] == "ValueError: the data is bad" and shape["has_traceback"]
