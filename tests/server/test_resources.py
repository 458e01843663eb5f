"""Tasks, artifacts and tools through the REST API of a real server."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx
import pytest

from tests.server.conftest import Server

FLOW = """\
name: resource flow
steps:
  - {name: load, tool: numbers, params: {n: 3}, outputs: [res_raw]}
  - {name: scale, tool: scale, inputs: {xs: res_raw}, outputs: [res_scaled]}
  - {name: sum, tool: total, inputs: {xs: res_scaled}, outputs: [res_score]}
"""


@pytest.fixture(scope="module")
def finished_run(server: Server) -> dict[str, Any]:
    api = server.client()
    rid = api.post("/api/v1/runs", json={"source": FLOW}).json()["run_id"]
    run = server.wait_run(rid)
    assert run["status"] == "success"
    return run


def _task(run: dict[str, Any], step: str) -> dict[str, Any]:
    task: dict[str, Any] = next(s for s in run["steps"] if s["name"] == step)["tasks"][0]
    return task


def test_task_details_logs_and_metrics(api: httpx.Client, finished_run: dict[str, Any]) -> None:
    load = _task(finished_run, "load")
    t = api.get(f"/api/v1/tasks/{load['id']}").json()
    assert t["state"] == "finished" and t["tool"] == "numbers" and t["run_id"] == finished_run["id"]
    assert [x["dst"] for x in t["transitions"]][-1] == "finished"
    logs = api.get(f"/api/v1/tasks/{load['id']}/logs").json()
    assert [x["message"] for x in logs["items"]] == ["making 3 numbers", "done"]
    assert logs["total"] == 2 and logs["next_offset"] is None
    page = api.get(f"/api/v1/tasks/{load['id']}/logs", params={"offset": 1, "limit": 1}).json()
    assert [x["message"] for x in page["items"]] == ["done"] and page["total"] == 2
    first = api.get(f"/api/v1/tasks/{load['id']}/logs", params={"limit": 1}).json()
    assert first["next_offset"] == 1
    total = _task(finished_run, "sum")
    m = api.get(f"/api/v1/tasks/{total['id']}/metrics").json()
    assert m["latest"] == {"total": 7.0}
    assert [(s["name"], s["value"], s["step"]) for s in m["samples"]] == [
        ("total", 6.0, None),
        ("total", 7.0, 2),
    ]
    for suffix in ("", "/logs", "/metrics"):
        r = api.get(f"/api/v1/tasks/{'0' * 32}{suffix}")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_artifacts_list_show_content_lineage(
    api: httpx.Client, finished_run: dict[str, Any]
) -> None:
    arts = api.get("/api/v1/artifacts", params={"run": finished_run["id"][:10]}).json()
    assert sorted(a["name"] for a in arts) == ["res_raw", "res_scaled", "res_score"]
    named = api.get("/api/v1/artifacts", params={"name": "res_score"}).json()
    assert [a["name"] for a in named] == ["res_score"]
    score = api.get("/api/v1/artifacts/res_score").json()
    assert score["producer"]["tool"] == "total" and score["producer"]["step"] == "sum"
    assert len(score["parents"]) == 1 and "uri" not in score
    by_version = api.get(f"/api/v1/artifacts/res_score:{score['version']}").json()
    by_prefix = api.get(f"/api/v1/artifacts/{score['id'][:12]}").json()
    assert by_version["id"] == by_prefix["id"] == score["id"]
    content = api.get("/api/v1/artifacts/res_score/content")
    assert content.status_code == 200
    assert content.headers["content-type"] == "application/octet-stream"
    assert content.headers["x-flowfed-artifact-kind"] == "json"
    assert json.loads(content.content) == {"total": 6.0}
    tree = api.get("/api/v1/artifacts/res_score/lineage").json()
    assert tree["name"] == "res_score"
    assert tree["parents"][0]["name"] == "res_scaled"
    assert tree["parents"][0]["parents"][0]["name"] == "res_raw"
    # Each producer's effective code hash sits beside its declared version.
    code = tree["producer"]["code_hash"]
    assert len(code) == 64 and tree["producer"]["tool_version"] == "1"
    assert code == score["producer"]["code_hash"]
    assert tree["parents"][0]["producer"]["code_hash"] not in (None, code)
    assert api.get("/api/v1/artifacts/no_such_artifact").status_code == 404


def test_non_shareable_content_is_403(
    server: Server, api: httpx.Client, finished_run: dict[str, Any]
) -> None:
    raw = api.get("/api/v1/artifacts/res_raw").json()
    with sqlite3.connect(server.db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE artifacts SET shareable = 0 WHERE id = ?", (raw["id"],))
    r = api.get(f"/api/v1/artifacts/{raw['id']}/content")
    assert r.status_code == 403 and r.json()["type"] == "urn:flowfed:problem:not-shareable"
    # Metadata and lineage stay visible: only the bytes stay home.
    assert api.get(f"/api/v1/artifacts/{raw['id']}").json()["shareable"] is False


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/artifacts/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/artifacts/..%2F..%2Fetc%2Fpasswd/content",
        "/api/v1/artifacts/res_raw%2F..%2Fx/lineage",
        "/api/v1/artifacts/%2E%2E",
        "/api/v1/artifacts/a%5Cb",
    ],
)
def test_path_tricks_in_artifact_refs_are_400(server: Server, api: httpx.Client, path: str) -> None:
    # Sent as raw bytes: httpx would otherwise normalize the dot segments away.
    r = api.request("GET", httpx.URL(server.url + path))
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "urn:flowfed:problem:bad-reference"


def test_tools_list_and_show(api: httpx.Client) -> None:
    tools = {t["name"]: t for t in api.get("/api/v1/tools").json()}
    assert {"numbers", "scale", "total", "task1", "task3"} <= set(tools)
    scale = api.get("/api/v1/tools/scale").json()
    assert scale["type"] == "preprocessing"
    assert scale["inputs"] == [{"name": "xs", "type": "list", "required": True}]
    assert scale["config_schema"]["properties"]["factor"]["default"] == 2.0
    assert tools["task1"]["seed_task"] is True and tools["task1"]["async"] is True
    r = api.get("/api/v1/tools/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_openapi_describes_the_api(server: Server) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    paths = doc["paths"]
    for p in (
        "/api/v1/flows",
        "/api/v1/flows/{name}/versions/{version}",
        "/api/v1/runs/{run_id}/retry",
        "/api/v1/tasks/{task_id}/logs",
        "/api/v1/artifacts/{ref}/lineage",
        "/api/v1/tools/{name}",
        "/api/v1/flows/execute",
    ):
        assert p in paths, p
    run_schema = paths["/api/v1/runs/{run_id}"]["get"]["responses"]["200"]
    assert run_schema["content"]["application/json"]["schema"]["$ref"].endswith("RunDetail")
    assert "401" in paths["/api/v1/runs"]["get"]["responses"]
