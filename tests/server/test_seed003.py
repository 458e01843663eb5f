"""Seed 003's flow-manager API: execute, get and list executions, exact shapes."""

from __future__ import annotations

import httpx

from tests.server.conftest import Server, seed_flow


def test_execute_the_sample_flow(api: httpx.Client) -> None:
    r = api.post("/api/v1/flows/execute", json=seed_flow())
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"execution_id", "status", "task_results", "error"}
    assert body["error"] is None
    assert body["status"] == "success"
    assert body["task_results"] == [
        {"task_name": "task1", "status": "success", "data": {"records": [1, 2, 3]}, "error": None},
        {"task_name": "task2", "status": "success", "data": {"processed": [10, 20, 30]},
         "error": None},
        {"task_name": "task3", "status": "success", "data": {"stored": 3}, "error": None},
    ]  # fmt: skip
    got = api.get(f"/api/v1/flows/executions/{body['execution_id']}")
    assert got.status_code == 200 and got.json() == body
    # An execution is a run too.
    run = api.get(f"/api/v1/runs/{body['execution_id']}").json()
    assert run["status"] == "success" and run["flow_name"] == "Data processing flow"


def test_a_failing_task2_ends_the_flow(api: httpx.Client) -> None:
    body = api.post("/api/v1/flows/execute", json=seed_flow("task2_broken")).json()
    assert body["status"] == "failure"
    assert [t["task_name"] for t in body["task_results"]] == ["task1", "task2"]
    t2 = body["task_results"][1]
    assert t2 == {"task_name": "task2", "status": "failure", "data": None, "error": "disk full"}
    listed = api.get("/api/v1/flows/executions").json()
    assert body in listed
    assert all(set(e) == {"execution_id", "status", "task_results", "error"} for e in listed)
    assert body["error"] == "step(s) failed: task2"


def test_unknown_executions_and_bad_flows(server: Server, api: httpx.Client) -> None:
    r = api.get("/api/v1/flows/executions/" + "0" * 32)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    flow = seed_flow()
    flow["flow"]["start_task"] = "task9"
    flow["flow"]["conditions"][0]["outcome"] = "maybe"
    r = api.post("/api/v1/flows/execute", json=flow)
    assert r.status_code == 422
    messages = [e["message"] for e in r.json()["errors"]]
    assert any("maybe" in m for m in messages), messages
    assert all(e.get("line") for e in r.json()["errors"])
    # Execute needs a token like everything else.
    anon = server.client(auth=False)
    assert anon.post("/api/v1/flows/execute", json=seed_flow()).status_code == 401
    assert anon.get("/api/v1/flows/executions").status_code == 401


def test_a_stored_seed_flow_runs_through_the_runs_api(server: Server, api: httpx.Client) -> None:
    created = api.post("/api/v1/flows", json={"flow": seed_flow()["flow"]})
    assert created.status_code == 201, created.text
    stored = api.get(f"/api/v1/flows/{created.json()['name']}").json()
    assert stored["spec"]["start"] == "task1" and '"start_task"' in stored["source"]
    rid = api.post("/api/v1/runs", json={"flow": created.json()["name"]}).json()["run_id"]
    assert server.wait_run(rid)["status"] == "success"
    execution = api.get(f"/api/v1/flows/executions/{rid}").json()
    assert [t["task_name"] for t in execution["task_results"]] == ["task1", "task2", "task3"]
