"""Routing on outcomes and expressions, loops and max_iterations, and the seed-003 format."""

from __future__ import annotations

import json

from tests.cli.conftest import Project, by_step

TOOLS = """
from pathlib import Path
from flowfed import tool, register_task, Context

@tool(version="1", type="database-adapter")
def source(*, fail: bool = False, value: int = 1) -> int:
    if fail:
        raise RuntimeError("source failed")
    return value

@tool(version="1", type="data-transformation")
def passthrough(x: int) -> int:
    return x

@tool(version="1", type="database-adapter")
def handler() -> str:
    return "handled"

@tool(version="1", type="evaluation")
def score(x: int, ctx: Context) -> dict:
    ctx.metric("auc", x / 10)
    return {"auc": x / 10}

@tool(version="1", type="database-adapter")
def start_counter() -> int:
    return 0

@tool(version="1", type="data-transformation")
def bump(*, path: str) -> int:
    p = Path(path)
    n = int(p.read_text()) + 1 if p.exists() else 1
    p.write_text(str(n))
    return n

@tool(version="1", type="evaluation")
def check(n: int, ctx: Context) -> dict:
    ctx.metric("n", n)
    return {"n": n}
"""


def test_failure_routes_to_a_handler_and_the_run_succeeds(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        """
        name: routed
        imports: [tools.py]
        steps:
          - {name: a, tool: source, params: {fail: true}, outputs: [x],
             next: {success: b, failure: recover}}
          - {name: b, tool: passthrough, inputs: {x: x}, outputs: [y]}
          - {name: recover, tool: handler, outputs: [note]}
    """,
    )
    report = project.run_json("flow.yaml")
    steps = by_step(report)
    assert report["status"] == "success"
    assert steps["a"]["tasks"][0]["status"] == "error"
    assert steps["recover"]["tasks"][0]["status"] == "finished"
    assert steps["b"]["tasks"][0]["status"] == "skipped"


def test_a_routed_step_waits_for_its_route_even_with_inputs_ready(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        """
        name: routed
        imports: [tools.py]
        steps:
          - {name: a, tool: source, outputs: [x], next: {success: end, failure: b}}
          - {name: b, tool: passthrough, inputs: {x: x}, outputs: [y]}
    """,
    )
    report = project.run_json("flow.yaml")
    assert by_step(report)["b"]["tasks"][0]["status"] == "skipped"
    assert report["status"] == "success"


def test_unrouted_failure_fails_the_run_and_skips_dependents(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        """
        name: unrouted
        imports: [tools.py]
        steps:
          - {name: a, tool: source, params: {fail: true}, outputs: [x]}
          - {name: b, tool: passthrough, inputs: {x: x}, outputs: [y]}
          - {name: other, tool: handler, outputs: [note]}
    """,
    )
    report = project.run_json("flow.yaml", check=1)
    steps = by_step(report)
    assert report["status"] == "failed" and "a" in report["error"]
    assert steps["b"]["tasks"][0]["status"] == "skipped"
    assert steps["other"]["tasks"][0]["status"] == "finished"


def test_when_expression_over_metrics_picks_the_branch(project: Project) -> None:
    project.write("tools.py", TOOLS)
    flow = """
        name: gate
        imports: [tools.py]
        config: {value: 9}
        steps:
          - {name: a, tool: source, params: {value: "${config.value}"}, outputs: [x]}
          - name: s
            tool: score
            inputs: {x: x}
            outputs: [scores]
            next: {when: "metrics.auc >= 0.9 and outputs.output.auc > 0", success: ship,
                   otherwise: rework}
          - {name: ship, tool: handler, outputs: [shipped]}
          - {name: rework, tool: passthrough, inputs: {x: x}, outputs: [again]}
    """
    project.write("flow.yaml", flow)
    high = by_step(project.run_json("flow.yaml"))
    assert high["ship"]["tasks"][0]["status"] == "finished"
    assert high["rework"]["tasks"][0]["status"] == "skipped"
    low = by_step(project.run_json("flow.yaml", "--param", "value=3"))
    assert low["ship"]["tasks"][0]["status"] == "skipped"
    assert low["rework"]["tasks"][0]["status"] == "finished"


def loop_flow(project: Project, limit: int, max_iterations: int) -> None:
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        f"""
        name: loop
        imports: [tools.py]
        max_iterations: {max_iterations}
        steps:
          - {{name: init, tool: start_counter, outputs: [zero], next: {{success: step}}}}
          - name: step
            tool: bump
            params: {{path: {project.root / "counter.txt"}}}
            cache: false
            outputs: [n]
          - name: test
            tool: check
            inputs: {{n: n}}
            outputs: [checked]
            next: {{when: "metrics.n >= {limit}", success: end, otherwise: step}}
    """,
    )


def test_a_condition_loop_runs_until_its_expression_holds(project: Project) -> None:
    loop_flow(project, limit=3, max_iterations=10)
    report = project.run_json("flow.yaml")
    steps = by_step(report)
    assert report["status"] == "success"
    assert [t["iteration"] for t in steps["step"]["tasks"]] == [1, 2, 3]
    assert [t["metrics"]["n"] for t in steps["test"]["tasks"]] == [1.0, 2.0, 3.0]
    versions = sorted(a["version"] for a in report["artifacts"] if a["name"] == "n")
    assert versions == [1, 2, 3]


def test_a_loop_that_never_ends_stops_at_max_iterations(project: Project) -> None:
    loop_flow(project, limit=1000, max_iterations=4)
    report = project.run_json("flow.yaml", check=1)
    assert "max_iterations (4)" in report["error"] and "'step'" in report["error"]
    assert len(by_step(report)["step"]["tasks"]) == 4


SEED_TASKS = """
from flowfed import register_task

@register_task("task1")
async def fetch(context):
    return {"status": "success", "data": {"records": [1, 2, 3]}, "error": None}

@register_task("task2")
async def process(context):
    previous = context["task1_result"]["data"]["records"]
    if context.get("fail_process") or len(previous) != 3:
        return {"status": "failure", "data": None, "error": "processing failed"}
    return {"status": "success", "data": {"processed": [r * 10 for r in previous]}, "error": None}

@register_task
async def task3(context):
    processed = context["task2_result"]["data"]["processed"]
    return {"status": "success", "data": {"stored": len(processed)}, "error": None}

@register_task("task2_broken")
async def broken(context):
    return {"status": "failure", "data": None, "error": "disk full"}
"""


def seed_flow(task2: str = "task2") -> dict:
    return {
        "flow": {
            "id": "flow123",
            "name": "Data processing flow",
            "start_task": "task1",
            "tasks": [
                {"name": "task1", "description": "Fetch data"},
                {"name": "task2", "description": "Process data", "tool": task2},
                {"name": "task3", "description": "Store data"},
            ],
            "conditions": [
                {
                    "name": "c1",
                    "source_task": "task1",
                    "outcome": "success",
                    "target_task_success": "task2",
                    "target_task_failure": "end",
                },
                {
                    "name": "c2",
                    "source_task": "task2",
                    "outcome": "success",
                    "target_task_success": "task3",
                    "target_task_failure": "end",
                },
            ],
        }
    }


def test_seed003_flow_runs_its_tasks_in_sequence_through_the_context(project: Project) -> None:
    project.write("tasks.py", SEED_TASKS)
    project.write("flow.json", json.dumps(seed_flow()))
    report = project.run_json("flow.json", "--import", "tasks.py")
    assert report["status"] == "success"
    assert [s["name"] for s in report["steps"]] == ["task1", "task2", "task3"]
    stored = project.ff("artifacts", "show", "task3_result", "--json", check=0).json()
    assert stored["kind"] == "json"
    tree = project.ff("lineage", "task3_result", "--json", check=0).json()
    assert tree["producer"]["step"] == "task3"


def test_seed003_failure_ends_the_flow_and_marks_it_failed(project: Project) -> None:
    project.write("tasks.py", SEED_TASKS)
    project.write("flow.json", json.dumps(seed_flow("task2_broken")))
    report = project.run_json("flow.json", "--import", "tasks.py", check=1)
    steps = by_step(report)
    assert report["status"] == "failed"
    assert steps["task2"]["tasks"][0]["error"]["message"] == "disk full"
    assert steps["task3"]["tasks"][0]["status"] == "skipped"


def test_seed003_outcome_failure_swaps_the_targets(project: Project) -> None:
    project.write("tasks.py", SEED_TASKS)
    flow = seed_flow("task2_broken")
    flow["flow"]["tasks"].append({"name": "alert", "tool": "task1"})
    flow["flow"]["conditions"][1] = {
        "name": "c2",
        "source_task": "task2",
        "outcome": "failure",
        "target_task_success": "alert",
        "target_task_failure": "task3",
    }
    project.write("flow.json", json.dumps(flow))
    report = project.run_json("flow.json", "--import", "tasks.py", check=1)
    steps = by_step(report)
    assert steps["alert"]["tasks"][0]["status"] == "finished"
    assert steps["task3"]["tasks"][0]["status"] == "skipped"
    assert report["status"] == "failed"  # the seed's rule: any failed task fails the flow


def test_a_cached_rerun_routes_on_the_original_metrics(project: Project) -> None:
    project.write("tools.py", TOOLS)
    project.write(
        "flow.yaml",
        """
        name: gate
        imports: [tools.py]
        steps:
          - {name: a, tool: source, params: {value: 9}, outputs: [x]}
          - {name: s, tool: score, inputs: {x: x}, outputs: [scores],
             next: {when: "metrics.auc >= 0.9", success: ship}}
          - {name: ship, tool: handler, outputs: [shipped]}
    """,
    )
    project.run_json("flow.yaml")
    again = by_step(project.run_json("flow.yaml"))
    assert again["s"]["tasks"][0]["status"] == "cached"
    assert again["s"]["tasks"][0]["metrics"] == {"auc": 0.9}
    assert again["ship"]["tasks"][0]["status"] == "cached"
