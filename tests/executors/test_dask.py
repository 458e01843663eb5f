"""`flowfed run --executor dask://...` end to end on a real Dask cluster with two workers."""

from __future__ import annotations

from typing import Any

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


def url(cluster: Any) -> str:
    return cluster.scheduler_address.replace("tcp://", "dask://") + "?inline_max=1024"


def test_flow_runs_on_the_dask_workers_with_artifacts_lineage_and_telemetry(
    project: Project, cluster: Any
) -> None:
    make(project)
    report = project.run_json("flow.yaml", "--executor", url(cluster))
    assert report["status"] == "success"
    assert set(statuses(report).values()) == {"finished"}
    assert by_step(report)["sum"]["tasks"][0]["metrics"] == {"total": EXPECTED_TOTAL}
    assert by_step(report)["load"]["tasks"][0]["metrics"] == {"made": 3000.0}
    arts = {a["name"]: a for a in report["artifacts"]}
    assert set(arts) == {"raw", "scaled", "score"}
    assert project.ff("artifacts", "show", "score", "--json", check=0).json()["kind"] == "json"

    # The call ran on one of the cluster's two workers, not in the engine.
    workers = set(cluster.scheduler.workers)
    assert len(workers) == 2
    logs = load_logs(project, report["run_id"])
    ran_on = {line.split("dask-worker ")[1] for line in logs if "dask-worker " in line}
    assert ran_on and ran_on <= workers

    tree = project.ff("lineage", "score", "--json", check=0).json()
    assert [p["name"] for p in tree["parents"]] == ["scaled"]
    assert [p["name"] for p in tree["parents"][0]["parents"]] == ["raw"]


def test_unchanged_rerun_on_dask_is_served_from_the_cache(project: Project, cluster: Any) -> None:
    make(project)
    first = project.run_json("flow.yaml", "--executor", url(cluster))
    second = project.run_json("flow.yaml", "--executor", url(cluster))
    assert set(statuses(second).values()) == {"cached"}
    assert {a["id"] for a in second["artifacts"]} == {a["id"] for a in first["artifacts"]}


def test_a_failed_attempt_on_dask_is_retried(project: Project, cluster: Any) -> None:
    flow = with_step(
        FLOW,
        "flaky",
        f"    params: {{marker: {project.root / 'marker'}}}\n    retries: 2\n"
        "    retry_backoff: 0.05\n",
    )
    make(project, flow)
    report = project.run_json("flow.yaml", "--executor", url(cluster))
    task = by_step(report)["sum"]["tasks"][0]
    assert task["status"] == "finished" and task["attempt"] == 2
    run = project.ff("runs", "show", report["run_id"], "--json", check=0).json()
    t = next(t for t in run["tasks"] if t["step"] == "sum")
    attempts = [(x["attempt"], x["dst"]) for x in t["transitions"]]
    assert (1, "error") in attempts and (2, "finished") in attempts


def test_a_failing_tool_reports_the_same_error_as_on_threads(
    project: Project, cluster: Any
) -> None:
    make(project, with_step(FLOW, "explode"))
    on_dask = project.run_json("flow.yaml", "--executor", url(cluster), check=1)
    on_threads = project.run_json("flow.yaml", "--no-cache", check=1)
    assert on_dask["status"] == "failed"
    shape = error_shape(on_dask)
    assert shape == error_shape(on_threads)
    assert shape["message"] == "ValueError: the data is bad" and shape["has_traceback"]


def test_a_task_past_its_timeout_is_cancelled_on_the_cluster(
    project: Project, cluster: Any
) -> None:
    make(project, with_step(FLOW, "slow", "    timeout: 0.5\n"))
    report = project.run_json("flow.yaml", "--executor", url(cluster), check=1)
    assert "timed out after 0.5s" in by_step(report)["sum"]["tasks"][0]["error"]["message"]


def test_dask_local_starts_a_cluster_of_worker_processes(project: Project) -> None:
    make(project, "executor: dask://local?workers=2\n" + FLOW)
    res = project.ff("run", "flow.yaml", "--json", check=0)
    report = res.json()
    assert report["status"] == "success"
    logs = load_logs(project, report["run_id"])
    line = next(x for x in logs if x.startswith("pid="))
    pid = int(line.split()[0].removeprefix("pid="))
    # the flow file's `executor:` chose Dask: the tool ran in a worker process
    assert "dask-worker tcp://" in line and pid != res.pid


def test_an_unreachable_scheduler_is_a_one_line_error(project: Project) -> None:
    make(project)
    res = project.ff("run", "flow.yaml", "--executor", "dask://127.0.0.1:9?connect_timeout=1s")
    assert res.code == 2
    assert "executor dask://127.0.0.1:9" in res.err and "cannot connect" in res.err
    assert "Traceback" not in res.err


def test_an_unknown_executor_url_is_refused_before_running(project: Project) -> None:
    make(project)
    res = project.ff("run", "flow.yaml", "--executor", "spark://x")
    assert res.code == 2 and "--executor must be" in res.err and "spark://x" in res.err
    make(project, "executor: spark://x\n" + FLOW)
    res = project.ff("run", "flow.yaml")
    assert res.code != 0 and "flow.yaml:1" in res.err + res.out
    assert "unknown executor 'spark://x'" in res.err + res.out


def test_a_fully_cached_rerun_on_dask_local_starts_no_cluster(project: Project) -> None:
    # Python reports every module a process imports when PYTHONPROFILEIMPORTTIME is set:
    # no Dask cluster can start in a process that never imported `distributed`.
    make(project, "executor: dask://local?workers=2\n" + FLOW)
    project.env["PYTHONPROFILEIMPORTTIME"] = "1"
    first = project.ff("run", "flow.yaml", "--json", check=0)
    assert first.json()["summary"]["executor"]["cluster_started"] is True, first.out
    assert "| distributed\n" in first.err
    second = project.ff("run", "flow.yaml", "--json", check=0)
    report = second.json()
    assert set(statuses(report).values()) == {"cached"}
    assert report["summary"]["executor"] == {
        "url": "dask://local?workers=2",
        "cluster_started": False,
    }
    assert "distributed" not in second.err
