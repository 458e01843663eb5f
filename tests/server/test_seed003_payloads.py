"""Seed-003 payloads as clients really send them, through the REST API and the CLI.

Each payload is checked against the seed's rules: execution starts at ``start_task``;
after each task its condition picks the next one (``outcome`` matched: the success
target, else the failure target); ``end`` or a task without a condition ends the flow;
every task's result joins the context as ``<task>_result``; the flow fails when a task
failed (by its last run: a loop that retried it to success recovered) or the loop hit
``max_iterations``. Clients also send a ``description`` on conditions, a top-level
``input_data`` (the context's ``input_data``), ``max_iterations`` and fields of their own.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import Server, flowfed, project_env, start_server, stop

TASKS = """
from flowfed import register_task


def _count(context, task, key):
    # How many times `task` ran before, read from its previous result in the context.
    previous = context.get(f"{task}_result") or {}
    return ((previous.get("data") or {}).get(key) or 0) + 1


@register_task("task1")
async def fetch(context):
    records = (context.get("input_data") or {}).get("records", [1, 2, 3])
    return {"status": "success", "data": {"records": records,
            "fetches": _count(context, "task1", "fetches")}, "error": None}


@register_task("task2")
async def process(context):
    factor = (context.get("input_data") or {}).get("factor", 10)
    records = context["task1_result"]["data"]["records"]
    return {"status": "success", "data": {"processed": [r * factor for r in records]},
            "error": None}


@register_task("task3")
async def store(context):
    attempt = _count(context, "task3", "attempt")
    needed = (context.get("input_data") or {}).get("store_succeeds_on", 1)
    if attempt < needed:
        return {"status": "failure", "data": {"attempt": attempt},
                "error": f"store unavailable (attempt {attempt})"}
    stored = len(context["task2_result"]["data"]["processed"])
    return {"status": "success", "data": {"attempt": attempt, "stored": stored}, "error": None}


@register_task("poll")
async def poll(context):
    polls = _count(context, "poll", "polls")
    if polls < (context.get("input_data") or {}).get("ready_after", 3):
        return {"status": "failure", "data": {"polls": polls}, "error": "not ready yet"}
    return {"status": "success", "data": {"polls": polls, "ready": True}, "error": None}


@register_task("validate_input")
async def validate_input(context):
    data = context.get("input_data") or {}
    if "records" not in data:
        return {"status": "failure", "data": {"keys": sorted(data)},
                "error": "input_data has no records"}
    return {"status": "success", "data": {"count": len(data["records"])}, "error": None}


@register_task("report")
async def report(context):
    seen = sorted(k for k in context if k.endswith("_result"))
    return {"status": "success", "data": {"seen": seen, "input": context.get("input_data")},
            "error": None}


@register_task("notify")
async def notify(context):
    return {"status": "success", "data": {"notified": True}, "error": None}
"""


def cond(source: str, ok: str, ko: str, outcome: str = "success", **extra: Any) -> dict[str, Any]:
    """A condition the way clients write one: named and described."""
    return {
        "name": f"condition_{source}_result",
        "description": f"Route on the result of {source}",
        "source_task": source,
        "outcome": outcome,
        "target_task_success": ok,
        "target_task_failure": ko,
        **extra,
    }


def retry_payload(store_succeeds_on: int, max_iterations: int | None = None) -> dict[str, Any]:
    """Fetch, process, store; a failed store goes back to fetching (a retry loop)."""
    flow: dict[str, Any] = {
        "id": "flow-retry",
        "name": "Fetch process store, with retry",
        "description": "Retries the whole chain while the store is unavailable",
        "start_task": "task1",
        "tasks": [
            {"name": "task1", "description": "Fetch data"},
            {"name": "task2", "description": "Process data"},
            {"name": "task3", "description": "Store data"},
        ],
        "conditions": [
            cond("task1", "task2", "end"),
            cond("task2", "task3", "end"),
            cond("task3", "end", "task1"),
        ],
    }
    if max_iterations is not None:
        flow["max_iterations"] = max_iterations
    return {
        "flow": flow,
        "input_data": {"records": [4, 5], "factor": 3, "store_succeeds_on": store_succeeds_on},
    }


def poll_payload(ready_after: int, max_iterations: int = 20) -> dict[str, Any]:
    """A poll task routed to itself until ready (``outcome: failure``), then a report."""
    return {
        "flow": {
            "id": "flow-poll",
            "name": "Poll until ready",
            "start_task": "poll",
            "max_iterations": max_iterations,
            "tasks": [
                {"name": "poll", "description": "Is the export ready?"},
                {"name": "report", "description": "Summarize"},
            ],
            "conditions": [cond("poll", "poll", "report", outcome="failure")],
        },
        "input_data": {"ready_after": ready_after},
    }


def trace(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["task_name"], t["status"]) for t in body["task_results"]]


@pytest.fixture(scope="module")
def seed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("seedsrv")
    s = start_server(root, f"sqlite:///{root / 'flowfed.db'}", tools=TASKS)
    yield s
    stop(s)


@pytest.fixture
def client(seed_server: Server) -> httpx.Client:
    return seed_server.client()


def execute(client: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/api/v1/flows/execute", json=payload)
    assert r.status_code == 200, r.text
    return dict(r.json())


# --- REST -------------------------------------------------------------------------------


def test_described_conditions_input_data_and_client_fields_run_in_sequence(
    client: httpx.Client,
) -> None:
    payload = retry_payload(store_succeeds_on=1)
    payload["flow"]["owner"] = "data-team"  # a client's own bookkeeping
    payload["flow"]["tasks"][0]["timeout_hint"] = 30
    payload["flow"]["conditions"][0]["priority"] = "high"
    payload["request_id"] = "abc-123"
    body = execute(client, payload)
    assert body["status"] == "success" and body["error"] is None
    assert trace(body) == [("task1", "success"), ("task2", "success"), ("task3", "success")]
    t1, t2, t3 = (t["data"] for t in body["task_results"])
    assert t1 == {"records": [4, 5], "fetches": 1}  # read from input_data
    assert t2 == {"processed": [12, 15]}  # factor 3 from input_data
    assert t3 == {"attempt": 1, "stored": 2}


def test_a_retry_loop_back_to_start_task_runs_until_the_store_succeeds(
    client: httpx.Client,
) -> None:
    body = execute(client, retry_payload(store_succeeds_on=3))
    assert trace(body) == [
        ("task1", "success"), ("task2", "success"), ("task3", "failure"),
        ("task1", "success"), ("task2", "success"), ("task3", "failure"),
        ("task1", "success"), ("task2", "success"), ("task3", "success"),
    ]  # fmt: skip
    # The loop recovered: task3's last run succeeded, so the execution did.
    assert body["status"] == "success" and body["error"] is None
    results = body["task_results"]
    # A failed task keeps its data beside its error.
    assert results[2]["data"] == {"attempt": 1}
    assert results[2]["error"] == "store unavailable (attempt 1)"
    assert [r["data"]["fetches"] for r in results if r["task_name"] == "task1"] == [1, 2, 3]
    assert results[-1]["data"] == {"attempt": 3, "stored": 2}
    # The same execution read back later is the same.
    again = client.get(f"/api/v1/flows/executions/{body['execution_id']}").json()
    assert again == body


def test_a_loop_that_never_succeeds_stops_at_max_iterations_with_the_reason(
    client: httpx.Client,
) -> None:
    body = execute(client, retry_payload(store_succeeds_on=1000, max_iterations=7))
    assert body["status"] == "failure"
    assert [name for name, _ in trace(body)] == [
        "task1", "task2", "task3", "task1", "task2", "task3", "task1",
    ]  # fmt: skip
    assert "max_iterations" in body["error"] and "7 task runs" in body["error"]
    assert "'task2'" in body["error"]  # what would have run next


def test_a_poll_task_routed_to_itself_polls_until_ready(client: httpx.Client) -> None:
    body = execute(client, poll_payload(ready_after=3))
    assert trace(body) == [
        ("poll", "failure"), ("poll", "failure"), ("poll", "success"), ("report", "success"),
    ]  # fmt: skip
    assert body["status"] == "success"
    assert [t["data"]["polls"] for t in body["task_results"][:3]] == [1, 2, 3]
    report = body["task_results"][-1]["data"]
    assert report == {"seen": ["poll_result"], "input": {"ready_after": 3}}


def test_a_poll_that_is_never_ready_stops_at_max_iterations(client: httpx.Client) -> None:
    body = execute(client, poll_payload(ready_after=1000, max_iterations=4))
    assert trace(body) == [("poll", "failure")] * 4
    assert body["status"] == "failure" and "max_iterations" in body["error"]


def test_outcome_failure_routes_a_failed_task_and_the_flow_fails(client: httpx.Client) -> None:
    payload = {
        "flow": {
            "id": "flow-validate",
            "name": "Validate then notify",
            "start_task": "validate_input",
            "tasks": [{"name": "validate_input"}, {"name": "notify"}, {"name": "task1"}],
            "conditions": [cond("validate_input", "notify", "task1", outcome="failure")],
        },
        "input_data": {"rows": []},
    }
    body = execute(client, payload)
    # The failure matched the outcome: the success target (notify) ran, task1 did not;
    # a task failed, so the flow failed (the seed's rule), naming the task.
    assert trace(body) == [("validate_input", "failure"), ("notify", "success")]
    assert body["task_results"][0]["data"] == {"keys": ["rows"]}
    assert body["status"] == "failure" and "validate_input" in body["error"]
    payload["input_data"] = {"records": [1]}
    body = execute(client, payload)
    assert trace(body) == [("validate_input", "success"), ("task1", "success")]
    assert body["status"] == "success"


def test_structural_and_planning_errors_come_back_in_one_422(client: httpx.Client) -> None:
    payload = retry_payload(store_succeeds_on=1)
    flow = payload["flow"]
    flow["conditions"][0]["outcome"] = "maybe"  # structural
    flow["conditions"][1]["target_task_success"] = "task4"  # planning: unknown step
    flow["tasks"].append({"name": "archive", "description": "no such task registered"})
    payload["input_data"] = ["not", "an", "object"]
    before = len(client.get("/api/v1/flows/executions").json())
    r = client.post("/api/v1/flows/execute", json=payload)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    text = "\n".join(e["message"] for e in errors)
    assert "'maybe'" in text
    assert "unknown step 'task4'" in text
    assert "unknown tool 'archive'" in text
    assert "'input_data' must be an object" in text
    assert all(e.get("line") for e in errors), errors
    assert len(client.get("/api/v1/flows/executions").json()) == before  # nothing ran


# --- CLI --------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    (tmp_path / "tasks.py").write_text(TASKS)
    env = project_env(tmp_path, f"sqlite:///{tmp_path / 'flowfed.db'}")
    return tmp_path, env


def steps_trace(report: dict[str, Any]) -> dict[str, list[str]]:
    """Each step's task statuses, in iteration order."""
    return {
        s["name"]: [t["status"] for t in sorted(s["tasks"], key=lambda t: t["iteration"])]
        for s in report["steps"]
    }


def test_cli_runs_the_retry_loop_and_validate_accepts_it(cli: tuple[Path, dict[str, str]]) -> None:
    root, env = cli
    payload = retry_payload(store_succeeds_on=2)
    payload["flow"]["owner"] = "data-team"
    (root / "flow.json").write_text(json.dumps(payload, indent=2))
    checked = flowfed(root, env, "validate", "flow.json", "--import", "tasks.py", "--json")
    verdict = json.loads(checked.stdout)
    assert verdict["valid"] is True
    assert any("'owner'" in w["message"] for w in verdict["warnings"])
    res = flowfed(root, env, "run", "flow.json", "--import", "tasks.py", "--json")
    report = json.loads(res.stdout)
    assert report["status"] == "success"
    assert steps_trace(report) == {
        "task1": ["finished", "finished"],
        "task2": ["finished", "finished"],
        "task3": ["error", "finished"],
    }
    task3 = next(s for s in report["steps"] if s["name"] == "task3")["tasks"]
    assert task3[0]["error"]["message"] == "store unavailable (attempt 1)"
    assert task3[0]["error"]["data"] == {"attempt": 1}


def test_cli_stops_a_never_ending_poll_with_exit_1(cli: tuple[Path, dict[str, str]]) -> None:
    root, env = cli
    (root / "poll.json").write_text(json.dumps(poll_payload(ready_after=99, max_iterations=3)))
    res = flowfed(root, env, "run", "poll.json", "--import", "tasks.py", "--json", check=1)
    report = json.loads(res.stdout)
    assert report["status"] == "failed" and "max_iterations" in report["error"]
    assert steps_trace(report) == {"poll": ["error"] * 3, "report": ["skipped"]}


def test_cli_validate_reports_every_problem_at_once(cli: tuple[Path, dict[str, str]]) -> None:
    root, env = cli
    payload = copy.deepcopy(retry_payload(store_succeeds_on=1))
    payload["flow"]["conditions"][2]["outcome"] = "sometimes"
    payload["flow"]["tasks"].append({"name": "archive"})
    (root / "bad.json").write_text(json.dumps(payload, indent=2))
    res = flowfed(root, env, "validate", "bad.json", "--import", "tasks.py", check=2)
    text = res.stdout + res.stderr
    assert "'sometimes'" in text and "unknown tool 'archive'" in text
    assert "bad.json:" in text
