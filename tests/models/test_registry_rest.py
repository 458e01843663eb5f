"""``/api/v1/models`` of a real ``flowfed server``, and ``flowfed --server ... models``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.models.conftest import Catalog
from tests.server.conftest import Server, start_server, stop


@pytest.fixture(scope="module")
def srv(catalog: Catalog) -> Iterator[Server]:
    s = start_server(catalog.root / "server", catalog.db_url)
    yield s
    stop(s)


@pytest.fixture(scope="module")
def api(srv: Server) -> httpx.Client:
    return srv.client()


def remote(srv: Server, *args: str, check: int = 0) -> Any:
    res = srv.ff("--server", srv.url, "--token", srv.token, "models", *args, check=check)
    return json.loads(res.stdout) if check == 0 and "--json" in args else res


def test_list_is_what_the_local_cli_lists(srv: Server, api: httpx.Client, catalog: Catalog) -> None:
    r = api.get("/api/v1/models")
    assert r.status_code == 200, r.text
    assert r.json() == catalog.json("models", "list")
    item = r.json()["items"][0]
    assert {
        "name",
        "version",
        "artifact_id",
        "run_id",
        "step",
        "variant",
        "metrics",
        "created_at",
    } <= set(item)


def test_list_filters_by_name_and_run(api: httpx.Client, catalog: Catalog) -> None:
    items = api.get("/api/v1/models", params={"name": "refined"}).json()["items"]
    assert [(e["name"], e["version"]) for e in items] == [("refined", 2), ("refined", 1)]
    run = catalog.reports[0]["run_id"]
    items = api.get("/api/v1/models", params={"run_id": run}).json()["items"]
    assert sorted(e["name"] for e in items) == ["classifier", "refined"]
    assert {e["run_id"] for e in items} == {run}
    r = api.get("/api/v1/models", params={"run_id": "ffffffffffff"})
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_versions_and_one_version(api: httpx.Client, catalog: Catalog) -> None:
    versions = api.get("/api/v1/models/classifier").json()
    assert versions["name"] == "classifier"
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    one = api.get("/api/v1/models/classifier/2")
    assert one.status_code == 200
    assert one.json() == catalog.json("models", "show", "classifier@2")
    assert (
        one.json()["metrics"]["roc_auc@evaluate"] == catalog.task_metrics(1, "evaluate")["roc_auc"]
    )


def test_compare(api: httpx.Client, catalog: Catalog) -> None:
    r = api.get("/api/v1/models/compare", params={"ids": "classifier@1,classifier@2"})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data == catalog.json("models", "compare", "classifier@1", "classifier@2")
    assert data["models"] == ["classifier@1", "classifier@2"] and data["same_sources"] is True


def test_unknown_version_is_404_naming_the_versions(api: httpx.Client) -> None:
    r = api.get("/api/v1/models/classifier/7")
    assert r.status_code == 404
    assert r.json()["detail"] == "classifier has versions 1..2; there is no classifier@7"
    r = api.get("/api/v1/models/nope")
    assert r.status_code == 404
    assert r.json()["detail"] == "no model named 'nope'; known: classifier, refined"


def test_bad_requests(api: httpx.Client) -> None:
    assert api.get("/api/v1/models/compare").status_code == 422  # ids is required
    r = api.get("/api/v1/models/compare", params={"ids": " , "})
    assert r.status_code == 400 and "names no model" in r.json()["detail"]
    r = api.get("/api/v1/models/compare", params={"ids": "classifier@1,scores@1"})
    assert r.status_code == 404 and "'scores' is a json artifact, not a model" in r.json()["detail"]
    assert api.get("/api/v1/models/classifier/0").status_code == 422
    assert api.get(f"/api/v1/models/classifier/{2**31}").status_code == 422


def test_the_registry_needs_a_token(srv: Server) -> None:
    assert srv.client(auth=False).get("/api/v1/models").status_code == 401


def test_cli_against_the_server(srv: Server, catalog: Catalog) -> None:
    assert remote(srv, "list", "--json") == catalog.json("models", "list")
    assert remote(srv, "show", "classifier@1", "--json") == catalog.json(
        "models", "show", "classifier@1"
    )
    assert remote(srv, "show", "classifier@latest", "--json")["version"] == 2
    assert remote(srv, "compare", "classifier@1", "refined@1", "--json") == catalog.json(
        "models", "compare", "classifier@1", "refined@1"
    )
    res = remote(srv, "show", "classifier@9", check=2)
    assert res.stderr.strip() == (
        "error: HTTP 404: classifier has versions 1..2; there is no classifier@9"
    )


def test_cli_with_a_refused_token_or_no_server_is_one_line(srv: Server) -> None:
    res = srv.ff("--server", srv.url, "--token", "ffu_wrong", "models", "list", check=2)
    assert res.stderr.startswith("error: HTTP 401") and "Traceback" not in res.stderr
    res = srv.ff("--server", "http://127.0.0.1:9", "models", "list", check=2)
    assert res.stderr.startswith("error: cannot reach http://127.0.0.1:9")
