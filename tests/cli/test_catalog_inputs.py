"""Catalog artifacts as inputs across runs: ``inputs: {xs: scaled:1}`` or an artifact id,
resolved before planning, recorded in lineage; an unknown one is a build-time error."""

from __future__ import annotations

from tests.cli.conftest import Project, by_step

TOOLS = """
from flowfed import Context, tool


@tool(version="1", type="database-adapter")
def numbers(*, n: int = 3) -> list:
    return [float(i) for i in range(n)]


@tool(version="1", type="preprocessing")
def scale(xs: list, *, factor: float = 10.0) -> list:
    return [x * factor for x in xs]


@tool(version="1", type="evaluation")
def total(xs: list, ctx: Context) -> dict:
    ctx.metric("total", sum(xs))
    return {"total": sum(xs), "count": len(xs)}
"""

MAKE = """\
name: make
imports: [tools.py]
config: {n: 3}
steps:
  - {name: load, tool: numbers, params: {n: "${config.n}"}, outputs: [raw]}
  - {name: scale, tool: scale, inputs: {xs: raw}, outputs: [scaled]}
"""

USE = """\
name: use
imports: [tools.py]
steps:
  - name: sum
    tool: total
    inputs: {xs: REF}
    outputs: [summary]
"""


def made(project: Project) -> tuple[dict, dict]:
    project.write("tools.py", TOOLS)
    project.write("make.flow.yaml", MAKE)
    project.run_json("make.flow.yaml")  # scaled:1 = [0, 10, 20]
    project.run_json("make.flow.yaml", "-p", "n=5")  # scaled:2 = [0, 10, 20, 30, 40]
    one = project.ff("artifacts", "show", "scaled:1", "--json", check=0).json()
    two = project.ff("artifacts", "show", "scaled:2", "--json", check=0).json()
    return one, two


def test_a_step_consumes_an_artifact_of_an_earlier_run_by_name_and_version(
    project: Project,
) -> None:
    one, two = made(project)
    project.write("use.yaml", USE.replace("REF", "scaled:1"))
    assert project.ff("validate", "use.yaml", "--json", check=0).json()["valid"] is True
    report = project.run_json("use.yaml")
    assert report["status"] == "success"
    summary = next(a for a in report["artifacts"] if a["name"] == "summary")
    tree = project.ff("lineage", summary["id"], "--json", check=0).json()
    # Recorded in lineage: the earlier run's artifact is the parent, its own tree below.
    assert [p["id"] for p in tree["parents"]] == [one["id"]]
    assert tree["parents"][0]["name"] == "scaled" and tree["parents"][0]["version"] == 1
    assert tree["parents"][0]["parents"][0]["name"] == "raw"
    # By id, the other version: a different input, so a new result (no stale cache).
    project.write("use.yaml", USE.replace("REF", two["id"]))
    again = project.run_json("use.yaml")
    assert by_step(again)["sum"]["tasks"][0]["status"] == "finished"
    summary2 = next(a for a in again["artifacts"] if a["name"] == "summary")
    tree2 = project.ff("lineage", summary2["id"], "--json", check=0).json()
    assert [p["id"] for p in tree2["parents"]] == [two["id"]]
    value = project.ff("artifacts", "show", summary2["id"], "--json", check=0).json()
    assert value["version"] == 2


def test_an_unknown_catalog_artifact_is_a_build_time_error(project: Project) -> None:
    made(project)
    project.write("use.yaml", USE.replace("REF", "scaled:9").replace("total", "totl"))
    res = project.ff("validate", "use.yaml", "--json", check=2)
    errors = res.json()["errors"]
    missing = next(e for e in errors if e.get("field") == "inputs.xs")
    assert missing["step"] == "sum" and missing["line"] == 6
    assert "'scaled:9' names no artifact of the catalog" in missing["message"]
    assert any(e.get("field") == "tool" for e in errors)  # with the flow's other problems
    run = project.ff("run", "use.yaml")
    assert run.code == 2 and "scaled:9" in run.err
