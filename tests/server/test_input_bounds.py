"""Regressions found by tests/server/test_schemathesis.py: inputs that used to answer 500."""

from __future__ import annotations

import httpx
import pytest

from .conftest import Server

HUGE = 10**22  # beyond any database integer (SQLite's are 64-bit, PostgreSQL's 32-bit)


def _problem(r: httpx.Response, status: int, kind: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = dict(r.json())
    assert body["type"] == f"urn:flowfed:problem:{kind}", body
    return body


def test_a_huge_flow_version_in_the_path_is_a_validation_error(api: httpx.Client) -> None:
    # Was: 500 OverflowError ("Python int too large to convert to SQLite INTEGER").
    body = _problem(api.get(f"/api/v1/flows/any/versions/{HUGE}"), 422, "validation-error")
    assert body["errors"][0]["loc"] == ["path", "version"]
    _problem(api.get(f"/api/v1/flows/any/versions/{-HUGE}"), 422, "validation-error")
    assert api.get(f"/api/v1/flows/any/versions/{2**31 - 1}").status_code == 404


def test_a_huge_run_version_is_a_validation_error(api: httpx.Client) -> None:
    r = api.post("/api/v1/runs", json={"flow": "any", "version": HUGE})
    body = _problem(r, 422, "validation-error")
    assert body["errors"][0]["field"] == "version"


def test_a_huge_log_offset_is_a_validation_error(api: httpx.Client) -> None:
    r = api.get("/api/v1/tasks/nope/logs", params={"offset": HUGE})
    body = _problem(r, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["query", "offset"]


@pytest.mark.parametrize("suffix", ["", "/lineage", "/content"])
def test_an_artifact_version_beyond_any_integer_is_not_found(
    api: httpx.Client, suffix: str
) -> None:
    for ref in (f"output:{HUGE}", f"output@{HUGE}"):
        _problem(api.get(f"/api/v1/artifacts/{ref}{suffix}"), 404, "not-found")


def test_a_body_that_is_not_utf8_is_malformed_json(server: Server, api: httpx.Client) -> None:
    # Was: a bare "about:blank" 400 from FastAPI, undocumented in the OpenAPI document.
    for path in ("/api/v1/flows", "/api/v1/flows/validate", "/api/v1/runs"):
        r = api.post(
            path, content=b'{"source": "\xb0"}', headers={"content-type": "application/json"}
        )
        _problem(r, 400, "malformed-json")
    r = api.post(
        "/api/v1/flows/execute", content=b"\xb0B", headers={"content-type": "application/json"}
    )
    _problem(r, 400, "malformed-json")


def test_the_openapi_document_lists_the_400_of_every_json_body(server: Server) -> None:
    doc = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if "requestBody" in op:
                assert "400" in op["responses"], (method, path)
    for path in ("/api/v1/runs/{run_id}/cancel", "/api/v1/runs/{run_id}/retry"):
        assert "400" in doc["paths"][path]["post"]["responses"]  # ambiguous id prefix
