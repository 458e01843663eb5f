"""Catalog artifacts as inputs through the REST API: resolved before planning, recorded in
lineage, and an unknown one refused with its line, step and field."""

from __future__ import annotations

import httpx

from tests.server.conftest import Server

MAKE = """\
name: cat-make
steps:
  - {name: load, tool: numbers, params: {n: 4}, outputs: [cat_raw]}
  - {name: scale, tool: scale, inputs: {xs: cat_raw}, outputs: [cat_scaled]}
"""

USE = """\
name: cat-use
steps:
  - name: sum
    tool: total
    inputs: {xs: REF}
    outputs: [cat_total]
"""


def test_a_run_consumes_an_artifact_of_an_earlier_run(server: Server, api: httpx.Client) -> None:
    rid = api.post("/api/v1/runs", json={"source": MAKE}).json()["run_id"]
    assert server.wait_run(rid)["status"] == "success"
    scaled = api.get("/api/v1/artifacts/cat_scaled:1").json()

    bad = api.post("/api/v1/flows/validate", json={"source": USE.replace("REF", "cat_scaled:7")})
    assert bad.status_code == 422
    [error] = bad.json()["errors"]
    assert (error["step"], error["field"], error["line"]) == ("sum", "inputs.xs", 5)
    assert "names no artifact of the catalog" in error["message"]

    source = USE.replace("REF", "cat_scaled:1")
    assert api.post("/api/v1/flows/validate", json={"source": source}).status_code == 200
    rid = api.post("/api/v1/runs", json={"source": source}).json()["run_id"]
    assert server.wait_run(rid)["status"] == "success"
    tree = api.get("/api/v1/artifacts/cat_total/lineage").json()
    assert [p["id"] for p in tree["parents"]] == [scaled["id"]]
    content = api.get("/api/v1/artifacts/cat_total/content")
    assert content.json() == {"total": 2.0 * (0 + 1 + 2 + 3)}
