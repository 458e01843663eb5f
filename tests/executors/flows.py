"""The flow and tools every executor test runs (the same as on threads)."""

from __future__ import annotations

from typing import Any

from tests.cli.conftest import Project, by_step

TOOLS = """
import os, time
from pathlib import Path
from flowfed import tool, Context


def where() -> str:
    # Which cluster worker runs this call (proves it left the engine's process).
    try:
        from distributed import get_worker
        return "dask-worker " + get_worker().address
    except (ImportError, ValueError):
        pass
    try:
        import ray
        if ray.is_initialized() and ray.get_runtime_context().get_task_id():
            return "ray-task " + ray.get_runtime_context().get_task_id()
    except ImportError:
        pass
    return "engine"


@tool(version="1", type="database-adapter")
def numbers(ctx: Context, *, n: int = 5) -> list:
    ctx.log(f"pid={os.getpid()} where={where()}")
    ctx.metric("made", n)
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


@tool(version="1", type="evaluation")
def flaky(xs: list, *, marker: str) -> dict:
    p = Path(marker)
    if not p.exists():
        p.write_text("failed once")
        raise RuntimeError("transient")
    return {"ok": True}


@tool(version="1", type="evaluation")
def explode(xs: list) -> dict:
    raise ValueError("the data is bad")


@tool(version="1", type="evaluation")
def slow(xs: list, ctx: Context) -> dict:
    # Ten times the tests' 0.5 s timeout: long enough to prove the cut, short enough that
    # a worker thread which cancellation cannot stop does not hold up the module teardown.
    time.sleep(5)
    return {}
"""

#: n=3000 makes `raw` and `scaled` a few tens of kB: over the tests' inline_max of 1 kB,
#: so they travel through the artifact store.
FLOW = """
name: on a cluster
imports: [tools.py]
steps:
  - name: load
    tool: numbers
    params: {n: 3000}
    outputs: [raw]
  - name: scale
    tool: scale
    inputs: {xs: raw}
    outputs: [scaled]
  - name: sum
    tool: total
    inputs: {xs: scaled}
    outputs: [score]
"""

EXPECTED_TOTAL = float(sum(range(3000)) * 2)


def make(project: Project, flow: str = FLOW) -> None:
    project.write("tools.py", TOOLS)
    project.write("flow.yaml", flow)


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {name: s["tasks"][-1]["status"] for name, s in by_step(report).items()}


def with_step(flow: str, tool: str, extra: str = "") -> str:
    """FLOW with the `sum` step calling ``tool`` (plus extra step settings)."""
    return flow.replace("tool: total\n", f"tool: {tool}\n{extra}")


def load_logs(project: Project, run_id: str) -> list[str]:
    run = project.ff("runs", "show", run_id, "--json", check=0).json()
    load = next(t for t in run["tasks"] if t["step"] == "load")
    return [line["message"] for line in load["logs"]]


def error_shape(report: dict[str, Any]) -> dict[str, Any]:
    err = by_step(report)["sum"]["tasks"][0]["error"]
    return {
        "keys": sorted(err),
        "message": err["message"],
        "type": err["type"],
        "has_traceback": "raise ValueError" in (err["traceback"] or ""),
        "context": sorted(err["context"]),
        "step": err["context"]["step"],
    }
