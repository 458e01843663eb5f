"""Flows and runs through the REST API of a real server (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.server.conftest import Server

FLOW = """\
name: numbers flow
description: three steps
config:
  factor: 2.0
steps:
  - name: load
    tool: numbers
    params: {n: 4}
    outputs: [raw]
  - name: scale
    tool: scale
    inputs: {xs: raw}
    params: {factor: "${config.factor}"}
    outputs: [scaled]
  - name: sum
    tool: total
    inputs: {xs: scaled}
    outputs: [score]
"""

BROKEN = """\
name: broken flow
steps:
  - name: load
    tool: numbrs
    outputs: [raw]
  - name: scale
    tool: scale
    inputs: {xs: missing_artifact}
    params: {factor: "${config.nope}"}
    outputs: [scaled]
"""


def test_submit_store_and_run_a_flow(make_server: Callable[..., Server], db_url: str) -> None:
    s = make_server(db_url)
    api = s.client()
    r = api.post("/api/v1/flows", json={"source": FLOW, "format": "yaml"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == "numbers flow" and created["version"] == 1
    r = api.post("/api/v1/runs", json={"flow": "numbers flow", "params": {"factor": 3}})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "running"
    run = s.wait_run(accepted["run_id"])
    assert run["status"] == "success", run
    assert run["params"] == {"factor": 3}
    assert [st["name"] for st in run["steps"]] == ["load", "scale", "sum"]
    assert all(st["status"] == "completed" for st in run["steps"])
    task = run["steps"][2]["tasks"][0]
    assert [t["dst"] for t in task["transitions"]] == [
        "initialized", "started", "running", "finished",
    ]  # fmt: skip
    arts = api.get("/api/v1/artifacts", params={"run": run["id"]}).json()
    score = next(a for a in arts if a["name"] == "score")
    content = api.get(f"/api/v1/artifacts/{score['id']}/content")
    assert json.loads(content.content) == {"total": 18.0}
    # A second run of the same flow and params is all cached.
    again = s.wait_run(
        api.post("/api/v1/runs", json={"flow": "numbers flow", "params": {"factor": 3}}).json()[
            "run_id"
        ]
    )
    assert all(t["cached"] for st in again["steps"] for t in st["tasks"])


def test_flow_versions_list_and_show(server: Server, api: httpx.Client) -> None:
    name = "versioned flow"
    text = FLOW.replace("numbers flow", name)
    ids = [api.post("/api/v1/flows", json={"source": text}).json() for _ in range(2)]
    assert [i["version"] for i in ids] == [1, 2]
    obj = json.loads(json.dumps({"flow": {"name": name, "steps": [
        {"name": "load", "tool": "numbers", "outputs": ["raw"]}]}}))  # fmt: skip
    third = api.post("/api/v1/flows", json=obj)
    assert third.status_code == 201 and third.json()["version"] == 3
    latest = api.get(f"/api/v1/flows/{name}").json()
    assert latest["version"] == 3 and latest["steps"] == 1 and latest["format"] == "json"
    assert latest["spec"]["steps"][0]["tool"] == "numbers"
    versions = api.get(f"/api/v1/flows/{name}/versions").json()
    assert [v["version"] for v in versions] == [1, 2, 3]
    v1 = api.get(f"/api/v1/flows/{name}/versions/1").json()
    assert v1["source"] == text and v1["format"] == "yaml" and v1["steps"] == 3
    listed = {f["name"]: f for f in api.get("/api/v1/flows").json()}
    assert listed[name]["version"] == 3
    missing = api.get("/api/v1/flows/nope/versions/9")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert api.get("/api/v1/flows/nope").status_code == 404


def test_validate_lists_every_planner_error_with_lines(api: httpx.Client) -> None:
    ok = api.post("/api/v1/flows/validate", json={"source": FLOW})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["valid"] is True and [t["step"] for t in body["tasks"]] == ["load", "scale", "sum"]
    assert body["tasks"][1]["after"] == ["load"]

    bad = api.post("/api/v1/flows/validate", json={"source": BROKEN, "format": "yaml"})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    problem = bad.json()
    assert problem["type"] == "urn:flowfed:problem:invalid-flow"
    errors = problem["errors"]
    assert len(errors) >= 3, errors
    by_field = {(e.get("step"), e.get("field")): e for e in errors}
    assert by_field[("load", "tool")]["line"] == 4
    assert "numbrs" in by_field[("load", "tool")]["message"]
    assert all(e["file"] == "request.yaml" and e["line"] for e in errors)
    assert any("missing_artifact" in e["message"] for e in errors)
    assert any("nope" in e["message"] for e in errors)
    # Storing a broken flow is refused the same way, and nothing is stored.
    assert api.post("/api/v1/flows", json={"source": BROKEN}).status_code == 422
    assert api.get("/api/v1/flows/broken flow").status_code == 404


def test_inline_object_errors_point_into_the_request_body(api: httpx.Client) -> None:
    body = {"flow": {"name": "x", "steps": [{"name": "a", "tool": "numbers", "bogus": 1}]}}
    text = json.dumps(body, indent=2)
    r = api.post(
        "/api/v1/flows/validate", content=text, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    (err,) = r.json()["errors"]
    assert err["message"] == "unknown key 'bogus'" and err["step"] == "a"
    assert text.splitlines()[err["line"] - 1].strip().startswith('"bogus"')


def test_request_validation_and_malformed_json(api: httpx.Client) -> None:
    r = api.post("/api/v1/runs", json={"params": {}})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["loc"][0] == "body"
    r = api.get("/api/v1/runs", params={"limit": 0, "status": "weird"})
    assert r.status_code == 422
    locs = sorted(tuple(e["loc"]) for e in r.json()["errors"])
    assert locs == [("query", "limit"), ("query", "status")]
    r = api.post(
        "/api/v1/flows",
        content=b'{"source": "name: x',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["type"] == "urn:flowfed:problem:malformed-json"
    assert "Traceback" not in r.text
    r = api.get("/api/v1/runs", params={"cursor": "not-a-cursor"})
    assert r.status_code == 400 and "cursor" in r.json()["detail"]


def test_oversized_bodies_get_413(server: Server, api: httpx.Client) -> None:
    big = b'{"source": "' + b"x" * (10 * 1024 * 1024 + 10) + b'"}'
    r = api.post("/api/v1/flows", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["status"] == 413

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"source": "'
        for _ in range(11):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    r = api.post(
        "/api/v1/flows/validate", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"


def test_inline_runs_list_and_cursor_pagination(server: Server, api: httpx.Client) -> None:
    flow = "cursor flow"
    definition = {"name": flow, "steps": [{"name": "load", "tool": "numbers", "outputs": ["r"]}]}
    ids = []
    for i in range(5):
        body = (
            {"definition": definition, "params": {}}
            if i % 2
            else {"source": json.dumps(definition), "format": "json"}
        )
        r = api.post("/api/v1/runs", json=body)
        assert r.status_code == 202, r.text
        ids.append(r.json()["run_id"])
    for rid in ids:
        assert server.wait_run(rid)["status"] == "success"
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "flow": flow, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/runs", params=params).json()
        assert len(page["items"]) <= 2
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert api.get("/api/v1/runs", params={"flow": flow, "status": "failed"}).json()["items"] == []
    # Unknown flows and runs are 404 problems.
    assert api.post("/api/v1/runs", json={"flow": "no such flow"}).status_code == 404
    assert api.get("/api/v1/runs/" + "0" * 32).status_code == 404


def test_cancel_a_slow_run(server: Server, api: httpx.Client) -> None:
    src = "name: slow flow\nsteps:\n  - {name: wait, tool: slow, outputs: [x]}\n"
    rid = api.post("/api/v1/runs", json={"source": src}).json()["run_id"]
    deadline = time.monotonic() + 30
    while True:  # wait until the tool is really running
        run = api.get(f"/api/v1/runs/{rid}").json()
        tasks = run["steps"][0]["tasks"]
        if tasks and tasks[0]["state"] == "running":
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = api.post(f"/api/v1/runs/{rid}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelling"
    run = server.wait_run(rid, timeout=30)
    assert run["status"] == "cancelled"
    assert run["steps"][0]["tasks"][0]["state"] == "cancelled"
    again = api.post(f"/api/v1/runs/{rid}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    assert api.post("/api/v1/runs/" + "0" * 32 + "/cancel").status_code == 404


def test_retry_resumes_a_failed_run_from_the_cache(server: Server, api: httpx.Client) -> None:
    marker = server.root / "flaky.broken"
    marker.write_text("x")
    src = f"""\
name: retry flow
steps:
  - {{name: load, tool: numbers, params: {{n: 7}}, outputs: [raw]}}
  - {{name: check, tool: flaky, inputs: {{xs: raw}}, params: {{marker: "{marker}"}}, outputs: [ok]}}
  - {{name: sum, tool: total, inputs: {{xs: ok}}, outputs: [score]}}
"""
    rid = api.post("/api/v1/runs", json={"source": src}).json()["run_id"]
    failed = server.wait_run(rid)
    assert failed["status"] == "failed"
    states = {st["name"]: st["status"] for st in failed["steps"]}
    assert states == {"load": "completed", "check": "failed", "sum": "skipped"}
    assert "flaky is broken" in failed["steps"][1]["tasks"][0]["error"]["message"]
    marker.unlink()  # the fix
    r = api.post(f"/api/v1/runs/{rid}/retry")
    assert r.status_code == 202, r.text
    assert r.json()["retry_of"] == rid
    retried = server.wait_run(r.json()["run_id"])
    assert retried["status"] == "success"
    tasks = {st["name"]: st["tasks"][0] for st in retried["steps"]}
    assert tasks["load"]["cached"] is True
    assert tasks["check"]["cached"] is False and tasks["check"]["state"] == "finished"
    again = api.post(f"/api/v1/runs/{retried['id']}/retry")
    assert again.status_code == 409


def test_run_with_a_bad_param_is_a_422(api: httpx.Client, tmp_path: Path) -> None:
    api.post("/api/v1/flows", json={"source": FLOW.replace("numbers flow", "param flow")})
    r = api.post("/api/v1/runs", json={"flow": "param flow", "params": {"nope": 1}})
    assert r.status_code == 422
    assert any("nope" in e["message"] for e in r.json()["errors"])
