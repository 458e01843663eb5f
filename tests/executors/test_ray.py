"""`flowfed run --executor ray://...` end to end on a real local Ray.

One Ray for the module (it takes seconds to start): this process starts it with
``ray.init(num_cpus=2)``; each ``flowfed run`` subprocess joins it through
``$RAY_ADDRESS``, which is what ``ray://local`` does when that variable is set, or, for
``ray://HOST:PORT``, through a Ray Client server on that cluster: the server ``ray start
--head`` runs on port 10001.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
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
from tests.polling import free_port, wait_for

URL = "ray://local?inline_max=1024"


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_client_address(ray_address: str) -> Iterator[str]:
    """HOST:PORT of a Ray Client server on the module's cluster."""
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "ray.util.client.server", "--address", ray_address),
            *("--host", "127.0.0.1", "--port", str(port), "--mode", "legacy"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: stopped with everything it started
    )

    def listening() -> bool:
        assert server.poll() is None, f"the Ray Client server exited ({server.returncode})"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    try:
        wait_for("the Ray Client server to listen", listening, timeout=60)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # its group may be gone already
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


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


def test_a_flow_runs_on_an_existing_cluster_through_ray_client(
    project: Project, ray_client_address: str
) -> None:
    # No $RAY_ADDRESS: the URL alone says where the cluster is, as for a user's head node.
    project.env.pop("RAY_ADDRESS", None)
    make(project)
    url = f"ray://{ray_client_address}?inline_max=1024"
    res = project.ff("run", "flow.yaml", "--executor", url, "--json", check=0)
    report = res.json()
    assert report["status"] == "success"
    assert set(statuses(report).values()) == {"finished"}
    assert by_step(report)["sum"]["tasks"][0]["metrics"] == {"total": EXPECTED_TOTAL}
    line = next(x for x in load_logs(project, report["run_id"]) if x.startswith("pid="))
    assert "where=ray-task " in line
    assert int(line.split()[0].removeprefix("pid=")) != res.pid


def test_a_task_past_its_timeout_is_cancelled_on_ray(rproject: Project) -> None:
    make(rproject, with_step(FLOW, "slow", "    timeout: 0.5\n"))
    report = rproject.run_json("flow.yaml", "--executor", URL, check=1)
    assert "timed out after 0.5s" in by_step(report)["sum"]["tasks"][0]["error"]["message"]


def test_an_unreachable_ray_head_is_a_one_line_error(project: Project) -> None:
    make(project)
    # Ray Client's own waits, shortened (5 s, then up to 30 s, three attempts by default).
    project.env["RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S"] = "1"
    project.env["RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S"] = "1"
    res = project.ff("run", "flow.yaml", "--executor", "ray://127.0.0.1:9")
    assert res.code == 2
    assert res.err.strip().splitlines() == [
        "error: executor ray://127.0.0.1:9: cannot connect: ray client connection timeout: "
        "is 127.0.0.1:9 the head's Ray Client port (10001 unless `ray start "
        "--ray-client-server-port` says otherwise), and reachable from here?"
    ]


def test_a_fully_cached_rerun_on_ray_connects_to_no_ray(rproject: Project) -> None:
    # ray://local joins the module's Ray ($RAY_ADDRESS) on the first call; the re-run,
    # served from the cache, never imports `ray` (Python lists every module a process
    # imports when PYTHONPROFILEIMPORTTIME is set), so it can neither start nor join one.
    make(rproject, "executor: ray://local\n" + FLOW)
    first = rproject.run_json("flow.yaml")
    assert first["status"] == "success"
    assert first["summary"]["executor"]["cluster_started"] is True
    rproject.env["PYTHONPROFILEIMPORTTIME"] = "1"
    second = rproject.ff("run", "flow.yaml", "--json", check=0)
    report = second.json()
    assert set(statuses(report).values()) == {"cached"}
    assert report["summary"]["executor"] == {"url": "ray://local", "cluster_started": False}
    assert "| ray\n" not in second.err and "| ray." not in second.err
    assert "| flowfed.executors\n" in second.err  # the check sees flowfed's own imports
