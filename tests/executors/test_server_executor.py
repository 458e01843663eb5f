"""`flowfed server --executor URL`: the server's runs call their tools on the cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.server.conftest import Server, flowfed, project_env
from tests.server.test_flows_runs import FLOW


def test_server_runs_execute_on_the_dask_cluster_in_its_settings(
    make_server: Callable[..., Server], cluster: Any
) -> None:
    url = cluster.scheduler_address.replace("tcp://", "dask://")
    s = make_server(None, "--executor", url)
    api = s.client()
    assert api.post("/api/v1/flows", json={"source": FLOW, "format": "yaml"}).status_code == 201
    run_id = api.post("/api/v1/runs", json={"flow": "numbers flow"}).json()["run_id"]
    run = s.wait_run(run_id)
    # On failure, say which task failed and why (the run dict alone is cut short).
    errors = {t["step"]: t["error"] for t in run["tasks"] if t["error"]}
    log = (s.root / "server.err").read_text()[-3000:]
    assert run["status"] == "success", (run["error"], errors, log)
    # The scheduler saw one cluster task per step of this run.
    keys = {str(t[0]) for t in cluster.scheduler.transition_log}
    for step in ("load", "scale", "sum"):
        assert any(k.startswith(f"flowfed-{step}-") for k in keys), keys


def test_server_refuses_an_unknown_executor_in_one_line(tmp_path: Any) -> None:
    env = project_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    res = flowfed(tmp_path, env, "server", "--port", "0", "--executor", "spark://x", check=2)
    assert "unknown executor 'spark://x'" in res.stderr and "Traceback" not in res.stderr
