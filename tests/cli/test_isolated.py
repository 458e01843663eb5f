"""`flowfed run --executor subprocess|sandbox`: tools in their own interpreter over the protocol."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.cli.conftest import Project, by_step

TOOLS = """
import os
from pathlib import Path

import pandas as pd

from flowfed import Context, tool


@tool(version="1", type="database-adapter")
def numbers(ctx: Context, *, n: int = 4) -> list:
    ctx.log(f"making {n} numbers")
    return list(range(n))


@tool(version="1", type="preprocessing")
def frame(xs: list, ctx: Context, *, factor: float = 2.0) -> pd.DataFrame:
    ctx.progress(1, 2)
    return pd.DataFrame({"x": xs, "y": [x * factor for x in xs]})


@tool(version="1", type="evaluation")
def summary(df: pd.DataFrame, ctx: Context) -> dict:
    ctx.metric("total", float(df["y"].sum()))
    ctx.metric("pid", os.getpid())
    escaped = 1.0
    try:
        (Path(__file__).parent / "escaped.txt").write_text("out of the sandbox")
    except OSError:
        escaped = 0.0
    ctx.metric("escaped", escaped)
    return {"rows": len(df), "total": float(df["y"].sum())}


@tool(version="1", type="evaluation")
def broken(df: pd.DataFrame) -> dict:
    raise ValueError(f"broken on {len(df)} rows")
"""

FLOW = """
name: isolated
imports: [tools.py]
steps:
  - name: load
    tool: numbers
    params: {n: 4}
    outputs: [raw]
  - name: frame
    tool: frame
    inputs: {xs: raw}
    params: {factor: 3.0}
    outputs: [table]
  - name: sum
    tool: summary
    inputs: {df: table}
    outputs: [score]
"""


def make(project: Project, flow: str = FLOW) -> None:
    project.write("tools.py", TOOLS)
    project.write("flow.yaml", flow)


def test_subprocess_executor_runs_tools_over_the_protocol(project: Project) -> None:
    make(project)
    res = project.ff("run", "flow.yaml", "--json", "--executor", "subprocess", check=0)
    report = res.json()
    assert report["status"] == "success", report
    steps = by_step(report)
    assert {s: steps[s]["tasks"][-1]["status"] for s in steps} == {
        "load": "finished",
        "frame": "finished",
        "sum": "finished",
    }
    metrics = steps["sum"]["tasks"][0]["metrics"]
    assert metrics["total"] == 18.0  # 3 * (0 + 1 + 2 + 3): the DataFrame crossed the wire
    # The tool ran in its own interpreter, not in the CLI's process.
    assert metrics["pid"] != res.pid
    assert metrics["escaped"] == 1.0  # no sandbox: the project folder is writable
    arts = {a["name"]: a for a in report["artifacts"]}
    assert set(arts) == {"raw", "table", "score"}
    tree = project.ff("lineage", "score", "--json", check=0).json()
    assert [p["name"] for p in tree["parents"]] == ["table"]
    assert [p["name"] for p in tree["parents"][0]["parents"]] == ["raw"]


def test_subprocess_executor_reports_the_tool_side_traceback(project: Project) -> None:
    make(project, FLOW.replace("tool: summary", "tool: broken"))
    report = project.run_json("flow.yaml", "--executor", "subprocess", check=1)
    assert report["status"] == "failed"
    task = by_step(report)["sum"]["tasks"][-1]
    assert task["status"] == "error"
    assert "broken on 4 rows" in task["error"]["message"]
    assert task["error"]["type"] == "ValueError"
    assert 'raise ValueError(f"broken on {len(df)} rows")' in task["error"]["traceback"]


# CI installs bubblewrap (.ci/run) and must run this test; a developer machine without
# it skips it, since installing a system package is beyond `make test`.
@pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="bubblewrap is not installed (apt-get install bubblewrap)",
)
def test_sandbox_executor_cannot_write_outside_its_workdir(project: Project) -> None:
    make(project)
    report = project.run_json("flow.yaml", "--executor", "sandbox")
    assert report["status"] == "success", report
    metrics = by_step(report)["sum"]["tasks"][0]["metrics"]
    assert metrics["total"] == 18.0  # the tool read its input
    assert metrics["escaped"] == 0.0  # but could not write into the project folder
    assert not (project.root / "escaped.txt").exists()
