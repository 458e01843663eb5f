"""Property-based API testing with schemathesis against a real ``flowfed server``.

The server is a subprocess (SQLite, the test tools module from ``conftest.TOOLS`` via
``--import``) holding one stored flow and one finished run, so ids that exist are at hand.
Its published ``/openapi.json`` is loaded as is and schemathesis generates requests for
every operation (positive and negative data), sent with a valid bearer token.

Checks: no 5xx (``not_a_server_error``); the status code, content type and body of every
answer are documented (``status_code_conformance``, ``content_type_conformance``,
``response_schema_conformance``); and data that breaks the schema is refused with a 4xx
(``negative_data_rejection``).

Excluded operations: none. ``POST /api/v1/flows/execute`` (seed 003) runs a flow
synchronously, but only flows made of the registered tools parse, and the test tools
finish at once; ``POST /api/v1/runs`` likewise only starts runs of valid flows, which
run in the background. The WebSocket route ``/api/v1/runs/{run_id}/events`` is not in
the OpenAPI document (OpenAPI does not describe WebSockets); tests/events_ws covers it.

Generated path parameters are random strings, which only reach the 404 paths; half of
the positive cases use the ids of the stored flow, the finished run, its task and its
artifact instead, so the 200 paths and their response schemas are exercised too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Server, start_server, stop  # noqa: E402

FLOW = {
    "name": "st-flow",
    "steps": [
        {"name": "load", "tool": "numbers", "params": {"n": 3}, "outputs": ["raw"]},
        {"name": "scale", "tool": "scale", "inputs": {"xs": "raw"}},
    ],
}

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

MAX_EXAMPLES = int(os.environ.get("FLOWFED_ST_EXAMPLES", "20"))

# Real values for path parameters, filled in by the fixture.
KNOWN: dict[str, list[Any]] = {}


@pytest.fixture(scope="module")
def st_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("schemathesis")
    s = start_server(root, f"sqlite:///{root / 'flowfed.db'}")
    try:
        yield s
    finally:
        stop(s)
        err = Path(root / "server.err").read_text()
        # An unexpected exception is logged with its traceback even when it was answered.
        assert "Traceback" not in err, err[-6000:]


@pytest.fixture(scope="module")
def api_schema(st_server: Server) -> Any:
    c = st_server.client()
    r = c.post("/api/v1/flows", json={"flow": FLOW})
    assert r.status_code == 201, r.text
    r = c.post("/api/v1/runs", json={"flow": "st-flow"})
    assert r.status_code == 202, r.text
    run = st_server.wait_run(r.json()["run_id"])
    assert run["status"] == "success", run
    arts = c.get("/api/v1/artifacts", params={"run": run["id"]}).json()
    KNOWN.clear()
    KNOWN.update(
        {
            "name": ["st-flow"],
            "version": [1],
            "run_id": [run["id"], run["id"][:8]],
            "execution_id": [run["id"]],
            "task_id": [t["id"] for t in run["tasks"]],
            "ref": [a["id"] for a in arts] + [f"{a['name']}:{a['version']}" for a in arts],
            "tool": ["numbers", "numbers@1"],
        }
    )

    schema = schemathesis.openapi.from_url(f"{st_server.url}/openapi.json")
    # Unknown query parameters are ignored, as HTTP APIs commonly do; the document does not
    # promise to reject them, so negative cases must not consist of extra parameters only.
    schema.config.generation.allow_extra_parameters = False
    return schema


def _operations() -> list[tuple[str, str]]:
    """Every (METHOD, path) of the OpenAPI document the app publishes (built in-process)."""
    from flowfed.server.app import create_app

    doc = create_app().openapi()
    return sorted(
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    )


def _takes_input(method: str, path: str) -> bool:
    from flowfed.server.app import create_app

    op = create_app().openapi()["paths"][path][method.lower()]
    return bool(op.get("parameters") or op.get("requestBody"))


OPERATIONS = _operations()
# Negative data needs something to corrupt: operations without parameters or a body
# (/health, /ready, /metrics, /api/v1/me, /api/v1/flows, /api/v1/tools) get positive
# cases only (Hypothesis reports an impossible negative strategy as Unsatisfiable).
CASES = [(m, p, "positive") for m, p in OPERATIONS] + [
    (m, p, "negative") for m, p in OPERATIONS if _takes_input(m, p)
]


def test_every_operation_is_covered(api_schema: Any) -> None:
    """The served document has exactly the operations parametrized below."""
    served = sorted(
        (op.method.upper(), op.path) for op in (r.ok() for r in api_schema.get_all_operations())
    )
    assert served == OPERATIONS


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {g}" for m, p, g in CASES]
)
def test_api(api_schema: Any, st_server: Server, method: str, path: str, mode: str) -> None:
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    names = [p.name for p in operation.path_parameters]
    if mode == "positive" and names and all(KNOWN.get(n) for n in names):
        # Half of the positive cases address resources that exist.
        real = {n: KNOWN[n][0] for n in names}
        if "tools" in path:
            real["name"] = "numbers"
        strategy = st.one_of(
            strategy,
            operation.as_strategy(
                generation_mode=schemathesis.GenerationMode(mode), path_parameters=real
            ),
        )

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=st_server.url,
            headers={"Authorization": f"Bearer {st_server.token}"},
            checks=CHECKS,
            timeout=60,
        )

    check()
