"""`flowfed run` end to end: artifacts, caching, lineage, lifecycle, errors, retries."""

from __future__ import annotations

from tests.cli.conftest import Project, by_step

TOOLS = """
import json, os, time
from pathlib import Path
from flowfed import tool, Context

@tool(version="1", type="database-adapter")
def numbers(ctx: Context, *, n: int = 5) -> list:
    ctx.log(f"making {n} numbers")
    return list(range(n))

@tool(version="1", type="preprocessing")
def scale(xs: list, ctx: Context, *, factor: float = 2.0) -> list:
    ctx.progress(1, 2)
    return [x * factor for x in xs]

@tool(version="1", type="evaluation")
def total(xs: list, ctx: Context) -> dict:
    s = sum(xs)
    ctx.metric("total", s)
    return {"total": s}

@tool(version="1", type="database-adapter")
def letters() -> str:
    return "abc"
"""

FLOW = """
name: three steps
imports: [tools.py]
config:
  n: 5
  factor: 2.0
steps:
  - name: load
    tool: numbers
    params: {n: "${config.n}"}
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
  - name: side
    tool: letters
    outputs: [word]
"""


def make(project: Project, tools: str = TOOLS, flow: str = FLOW) -> None:
    project.write("tools.py", tools)
    project.write("flow.yaml", flow)


def statuses(report: dict) -> dict[str, str]:
    return {name: s["tasks"][-1]["status"] for name, s in by_step(report).items()}


def test_run_stores_every_output_with_hash_version_and_lineage(pg_project: Project) -> None:
    make(pg_project)
    report = pg_project.run_json("flow.yaml")
    assert report["status"] == "success"
    assert set(statuses(report).values()) == {"finished"}
    arts = {a["name"]: a for a in report["artifacts"]}
    assert set(arts) == {"raw", "scaled", "score", "word"}
    assert all(len(a["hash"]) == 64 and a["version"] == 1 for a in arts.values())

    tree = pg_project.ff("lineage", "score", "--json", check=0).json()
    assert tree["name"] == "score"
    assert [p["name"] for p in tree["parents"]] == ["scaled"]
    assert [p["name"] for p in tree["parents"][0]["parents"]] == ["raw"]
    assert tree["parents"][0]["parents"][0]["parents"] == []
    assert tree["producer"]["tool"] == "total"

    text = pg_project.ff("lineage", "score", check=0).out
    assert "score:1" in text and "scaled:1" in text and "raw:1" in text


def test_unchanged_rerun_skips_every_step_as_cached(pg_project: Project) -> None:
    make(pg_project)
    first = pg_project.run_json("flow.yaml")
    second = pg_project.run_json("flow.yaml")
    assert set(statuses(second).values()) == {"cached"}
    assert all(t["cached"] for s in second["steps"] for t in s["tasks"])
    # Cached tasks reuse the very same artifacts: same ids, hashes and versions.
    assert {a["id"] for a in second["artifacts"]} == {a["id"] for a in first["artifacts"]}


def test_config_change_reruns_that_step_and_downstream_only(project: Project) -> None:
    make(project)
    project.run_json("flow.yaml")
    report = project.run_json("flow.yaml", "--param", "factor=3")
    assert statuses(report) == {
        "load": "cached",
        "scale": "finished",
        "sum": "finished",
        "side": "cached",
    }
    arts = {a["name"]: a for a in report["artifacts"]}
    assert arts["scaled"]["version"] == 2 and arts["raw"]["version"] == 1


def test_comments_and_docstrings_keep_the_cache_but_logic_changes_do_not(project: Project) -> None:
    make(project)
    project.run_json("flow.yaml")
    commented = TOOLS.replace(
        "    s = sum(xs)\n", '    """Sum it all."""\n    # a comment\n    s  =  sum( xs )\n'
    )
    project.write("tools.py", commented)
    assert set(statuses(project.run_json("flow.yaml")).values()) == {"cached"}
    project.write("tools.py", commented.replace("s  =  sum( xs )", "s = sum(xs) + 1"))
    assert statuses(project.run_json("flow.yaml"))["sum"] == "finished"
    assert statuses(project.run_json("flow.yaml"))["sum"] == "cached"


def test_no_cache_flag_and_step_cache_false_run_everything(project: Project) -> None:
    make(project)
    project.run_json("flow.yaml")
    assert set(statuses(project.run_json("flow.yaml", "--no-cache")).values()) == {"finished"}
    project.write(
        "flow.yaml", FLOW.replace("    outputs: [word]", "    outputs: [word]\n    cache: false")
    )
    st = statuses(project.run_json("flow.yaml"))
    assert st["side"] == "finished" and st["load"] == "cached"


def test_every_task_goes_through_the_lifecycle_and_transitions_are_recorded(
    project: Project,
) -> None:
    make(project)
    run_id = project.run_json("flow.yaml")["run_id"]
    run = project.ff("runs", "show", run_id[:8], "--json", check=0).json()
    assert run["status"] == "success"
    for task in run["tasks"]:
        path = [t["dst"] for t in task["transitions"]]
        assert path == ["initialized", "started", "running", "finished"], task["step"]
        times = [t["at"] for t in task["transitions"]]
        assert times == sorted(times)
    listing = project.ff("runs", "list", "--json", check=0).json()
    assert listing[0]["id"] == run_id


def test_tool_telemetry_reaches_the_database(project: Project) -> None:
    make(project)
    report = project.run_json("flow.yaml")
    sum_task = by_step(report)["sum"]["tasks"][0]
    assert sum_task["metrics"] == {"total": 20.0}
    run = project.ff("runs", "show", report["run_id"], "--json", check=0).json()
    load = next(t for t in run["tasks"] if t["step"] == "load")
    assert load["metrics"] in (None, {})
    assert any("making 5 numbers" in line["message"] for line in load["logs"])


def test_artifact_commands_show_catalog_entries(project: Project) -> None:
    make(project)
    project.run_json("flow.yaml")
    listing = project.ff("artifacts", "list", "--json", check=0).json()
    assert {a["name"] for a in listing} == {"raw", "scaled", "score", "word"}
    shown = project.ff("artifacts", "show", "score:1", "--json", check=0).json()
    assert shown["kind"] == "json" and shown["producer"]["step"] == "sum"
    by_prefix = project.ff("artifacts", "show", shown["id"][:10], "--json", check=0).json()
    assert by_prefix["id"] == shown["id"]
    missing = project.ff("artifacts", "show", "nope")
    assert missing.code == 2 and "no artifact matches 'nope'" in missing.err


def test_human_output_draws_the_tree_and_a_summary(project: Project) -> None:
    make(project)
    res = project.ff("run", "flow.yaml", check=0)
    assert "Step: load" in res.out and "Step: sum" in res.out
    assert "finished" in res.out and "success" in res.out
    assert "flowfed lineage" in res.out


def test_a_tool_that_raises_fails_the_run_with_a_located_report(project: Project) -> None:
    tools = (
        TOOLS
        + """
@tool(version="1", type="evaluation")
def explode(xs: list) -> dict:
    raise ValueError("the data is bad")
"""
    )
    make(project, tools, FLOW.replace("tool: total", "tool: explode"))
    res = project.ff("run", "flow.yaml", "--json")
    assert res.code == 1
    report = res.json()
    assert report["status"] == "failed"
    task = by_step(report)["sum"]["tasks"][0]
    assert task["status"] == "error"
    assert "ValueError: the data is bad" in task["error"]["message"]
    assert "raise ValueError" in task["error"]["traceback"]
    assert task["error"]["context"]["step"] == "sum"
    assert "score" not in {a["name"] for a in report["artifacts"]}
    human = project.ff("run", "flow.yaml")
    assert human.code == 1 and "the data is bad" in human.out and "Traceback" not in human.err


def test_a_tool_returning_the_wrong_outputs_is_an_error(project: Project) -> None:
    tools = (
        TOOLS
        + """
from typing import NamedTuple
class Two(NamedTuple):
    a: list
    b: list
@tool(version="1", type="data-transformation")
def halves(xs: list) -> Two:
    return {"a": xs}
"""
    )
    flow = FLOW.replace(
        "tool: total\n    inputs: {xs: scaled}\n    outputs: [score]",
        "tool: halves\n    inputs: {xs: scaled}\n    outputs: [h1, h2]",
    )
    make(project, tools, flow)
    report = project.run_json("flow.yaml", check=1)
    err = by_step(report)["sum"]["tasks"][0]["error"]["message"]
    assert "declares ['a', 'b']" in err and "missing ['b']" in err


def test_unserializable_output_needs_allow_pickle_and_is_flagged(project: Project) -> None:
    tools = (
        TOOLS
        + """
class Thing:
    pass
@tool(version="1", type="data-transformation")
def thing(xs: list) -> object:
    return Thing()
"""
    )
    flow = FLOW.replace("tool: total", "tool: thing")
    make(project, tools, flow)
    report = project.run_json("flow.yaml", check=1)
    assert "allow_pickle" in by_step(report)["sum"]["tasks"][0]["error"]["message"]
    project.write(
        "flow.yaml", flow.replace("outputs: [score]", "outputs: [score]\n    allow_pickle: true")
    )
    project.run_json("flow.yaml")
    shown = project.ff("artifacts", "show", "score", "--json", check=0).json()
    assert shown["kind"] == "pickle" and shown["pickled"] is True


def test_retries_run_a_new_attempt_after_a_failure(project: Project) -> None:
    tools = (
        TOOLS
        + """
@tool(version="1", type="evaluation")
def flaky(xs: list, *, marker: str) -> dict:
    p = Path(marker)
    if not p.exists():
        p.write_text("failed once")
        raise RuntimeError("transient")
    return {"ok": True}
"""
    )
    flow = FLOW.replace(
        "tool: total\n    inputs: {xs: scaled}",
        f"tool: flaky\n    params: {{marker: {project.root / 'marker'}}}\n    retries: 2\n"
        "    retry_backoff: 0.05\n    inputs: {xs: scaled}",
    )
    make(project, tools, flow)
    report = project.run_json("flow.yaml")
    task = by_step(report)["sum"]["tasks"][0]
    assert task["status"] == "finished" and task["attempt"] == 2
    run = project.ff("runs", "show", report["run_id"], "--json", check=0).json()
    t = next(t for t in run["tasks"] if t["step"] == "sum")
    attempts = [(x["attempt"], x["dst"]) for x in t["transitions"]]
    assert (1, "error") in attempts and (2, "finished") in attempts


def test_a_task_past_its_timeout_ends_in_error(project: Project) -> None:
    tools = (
        TOOLS
        + """
@tool(version="1", type="evaluation")
def slow(xs: list, ctx: Context) -> dict:
    for _ in range(100):
        time.sleep(0.05)
        ctx.check_cancelled()
    return {}
"""
    )
    make(project, tools, FLOW.replace("tool: total", "tool: slow\n    timeout: 0.3"))
    report = project.run_json("flow.yaml", check=1)
    err = by_step(report)["sum"]["tasks"][0]["error"]
    assert "timed out after 0.3s" in err["message"]


def test_async_tools_run_like_sync_ones(project: Project) -> None:
    tools = (
        TOOLS
        + """
import asyncio
@tool(version="1", type="evaluation")
async def atotal(xs: list, ctx: Context) -> dict:
    await asyncio.sleep(0.01)
    ctx.metric("n", len(xs))
    return {"total": sum(xs)}
"""
    )
    make(project, tools, FLOW.replace("tool: total", "tool: atotal"))
    report = project.run_json("flow.yaml")
    assert by_step(report)["sum"]["tasks"][0]["metrics"] == {"n": 5.0}


def test_process_executor_runs_tools_in_child_processes(project: Project) -> None:
    tools = (
        TOOLS
        + """
@tool(version="1", type="evaluation")
def pid(xs: list, ctx: Context) -> dict:
    ctx.metric("ppid", os.getppid())
    return {"pid": os.getpid()}
"""
    )
    make(project, tools, FLOW.replace("tool: total", "tool: pid"))
    res = project.ff("run", "flow.yaml", "--json", "--executor", "processes", check=0)
    report = res.json()
    assert report["status"] == "success"
    # The tool's parent is the flowfed process itself: it ran in a forked child.
    assert by_step(report)["sum"]["tasks"][0]["metrics"]["ppid"] == res.pid


def test_runs_logs_prints_what_tools_logged(project: Project) -> None:
    make(project)
    run_id = project.run_json("flow.yaml")["run_id"]
    text = project.ff("runs", "logs", run_id[:8], check=0).out
    assert "load [info] making 5 numbers" in text
    lines = project.ff("runs", "logs", run_id, "--step", "load", "--json", check=0).json()
    assert [x["message"] for x in lines] == ["making 5 numbers"]
    missing = project.ff("runs", "logs", run_id, "--step", "nope")
    assert missing.code == 2 and "has no step 'nope'" in missing.err
