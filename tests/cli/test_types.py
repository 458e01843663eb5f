"""Types checked before anything runs: each artifact edge's producer annotation against the
consumer's parameter annotation, reported with every other build-time problem; and the
tool-type rules checked on what a tool really returns."""

from __future__ import annotations

from tests.cli.conftest import Project, by_step

TOOLS = """
from typing import Any, NamedTuple, Optional, Sequence

import pandas as pd

from flowfed import Lazy, Model, tool


class Threshold(Model):
    def __init__(self, t: float = 0.5) -> None:
        self.t = t

    def to_bytes(self) -> bytes:
        return str(self.t).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Threshold":
        return cls(float(data))

    def save(self, path):
        open(path, "wb").write(self.to_bytes())

    @classmethod
    def load(cls, path):
        return cls.from_bytes(open(path, "rb").read())


class Halves(NamedTuple):
    low: list[int]
    high: pd.DataFrame


@tool(version="1", type="database-adapter")
def frame() -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2, 3]})


@tool(version="1", type="database-adapter")
def ints() -> list[int]:
    return [1, 2, 3]


@tool(version="1", type="database-adapter")
def count() -> int:
    return 3


@tool(version="1", type="database-adapter")
def maybe() -> Optional[list]:
    return None


@tool(version="1", type="database-adapter")
def untyped():
    return [1]


@tool(version="1", type="data-transformation")
def halves(xs: list) -> Halves:
    return Halves(xs[:1], pd.DataFrame({"x": xs[1:]}))


@tool(version="1", type="evaluation")
def total(xs: list) -> dict:
    return {"total": sum(xs)}


@tool(version="1", type="evaluation")
def seq_total(xs: Sequence[int]) -> dict:
    return {"total": sum(xs)}


@tool(version="1", type="evaluation")
def halve(x: float) -> dict:
    return {"half": x / 2}


@tool(version="1", type="evaluation")
def optional_frame(table: Optional[pd.DataFrame]) -> dict:
    return {"rows": 0 if table is None else len(table)}


@tool(version="1", type="evaluation")
def size(handle: Lazy) -> dict:
    return {"bytes": handle.size}


@tool(version="1", type="evaluation")
def anything(value: Any) -> dict:
    return {"type": type(value).__name__}


@tool(version="1", type="analysis")
def fit(xs: list) -> Threshold:
    return Threshold(sum(xs) / len(xs))


@tool(version="1", type="evaluation")
def judge(model: Model) -> dict:
    return {"t": model.t}


@tool(version="1", type="preprocessing")
def sneaky(xs: list) -> Any:
    return Threshold(0.1)


@tool(version="1", type="analysis")
def no_model(xs: list) -> Threshold:
    return [0]  # not what it says
"""


def flow(project: Project, steps: str, name: str = "flow.yaml") -> None:
    project.write(name, "name: typed\nimports: [tools.py]\nsteps:\n" + steps)


def validate(project: Project, name: str = "flow.yaml", check: int = 0) -> dict:
    return dict(project.ff("validate", name, "--json", check=check).json())


def test_a_dataframe_into_a_list_input_fails_validation_at_its_line(project: Project) -> None:
    project.write("tools.py", TOOLS)
    flow(
        project,
        """\
  - {name: load, tool: frame, outputs: [table]}
  - name: sum
    tool: total
    inputs: {xs: table}
    outputs: [scores]
  - {name: other, tool: count, params: {n: 3}, outputs: [n]}
""",
    )
    result = validate(project, check=2)
    errors = result["errors"]
    mismatch = next(e for e in errors if e.get("field") == "inputs.xs")
    assert mismatch["step"] == "sum" and mismatch["line"] == 7 and mismatch["file"] == "flow.yaml"
    assert "is list" in mismatch["message"] and "DataFrame" in mismatch["message"]
    assert "'table' from step 'load'" in mismatch["message"]
    # Reported together with the flow's other problems, in one pass.
    assert any(e.get("field") == "params.n" and e["step"] == "other" for e in errors)
    # And nothing ran: the same flow is refused by `run` before any task.
    res = project.ff("run", "flow.yaml", "--json")
    assert res.code == 2 and "DataFrame" in res.out + res.err


def test_compatible_edges_validate(project: Project) -> None:
    project.write("tools.py", TOOLS)
    flow(
        project,
        """\
  - {name: load, tool: ints, outputs: [xs]}
  - {name: n, tool: count, outputs: [n]}
  - {name: t1, tool: total, inputs: {xs: xs}, outputs: [a]}        # list[int] -> list
  - {name: t2, tool: seq_total, inputs: {xs: xs}, outputs: [b]}    # list[int] -> Sequence[int]
  - {name: t3, tool: halve, inputs: {x: n}, outputs: [c]}          # int -> float
  - {name: f, tool: frame, outputs: [table]}
  - {name: t4, tool: optional_frame, inputs: {table: table}, outputs: [d]}  # -> Optional
  - {name: t5, tool: size, inputs: {handle: table}, outputs: [e]}  # Lazy takes anything
  - {name: t6, tool: anything, inputs: {value: table}, outputs: [g]}  # Any: unchecked
  - {name: u, tool: untyped, outputs: [raw]}
  - {name: t7, tool: total, inputs: {xs: raw}, outputs: [h]}      # no annotation: unchecked
  - {name: fit, tool: fit, inputs: {xs: xs}, outputs: [model]}
  - {name: t8, tool: judge, inputs: {model: model}, outputs: [i]}  # Threshold -> Model
  - {name: split, tool: halves, inputs: {xs: xs}, outputs: [low, high]}
  - {name: t9, tool: total, inputs: {xs: low}, outputs: [j]}      # a NamedTuple field
""",
    )
    assert validate(project)["valid"] is True
    report = project.run_json("flow.yaml")
    assert report["status"] == "success"


def test_optional_producer_named_tuple_field_and_model_mismatches(project: Project) -> None:
    project.write("tools.py", TOOLS)
    flow(
        project,
        """\
  - {name: m, tool: maybe, outputs: [xs]}
  - {name: t1, tool: total, inputs: {xs: xs}, outputs: [a]}
  - {name: load, tool: ints, outputs: [ys]}
  - {name: split, tool: halves, inputs: {xs: ys}, outputs: [low, high]}
  - {name: t2, tool: total, inputs: {xs: high}, outputs: [b]}
  - {name: fit, tool: fit, inputs: {xs: ys}, outputs: [model]}
  - {name: t3, tool: total, inputs: {xs: model}, outputs: [c]}
""",
    )
    errors = validate(project, check=2)["errors"]
    by_step = {e["step"]: e for e in errors if e.get("field") == "inputs.xs"}
    assert set(by_step) == {"t1", "t2", "t3"}, errors
    assert "list | None" in by_step["t1"]["message"]  # it may return None
    assert "'high'" in by_step["t2"]["message"] and "DataFrame" in by_step["t2"]["message"]
    assert "Threshold" in by_step["t3"]["message"]
    assert [by_step[s]["line"] for s in ("t1", "t2", "t3")] == [5, 8, 10]


def test_a_preprocessing_tool_returning_a_model_fails_its_task(project: Project) -> None:
    project.write("tools.py", TOOLS)
    flow(
        project,
        """\
  - {name: load, tool: ints, outputs: [xs]}
  - {name: prep, tool: sneaky, inputs: {xs: xs}, outputs: [out]}
  - {name: fit, tool: no_model, inputs: {xs: xs}, outputs: [model]}
""",
    )
    # `-> Any` says nothing at build time, and `-> Threshold` is not what `no_model` returns.
    assert validate(project)["valid"] is True
    report = project.run_json("flow.yaml", check=1)
    steps = by_step(report)
    error = steps["prep"]["tasks"][0]["error"]["message"]
    assert error.startswith("tool 'sneaky' is of type 'preprocessing' but returned a model")
    assert "'output' (Threshold)" in error
    fit_error = steps["fit"]["tasks"][0]["error"]["message"]
    assert "type 'analysis' but returned no model" in fit_error
    assert not [a for a in report["artifacts"] if a["name"] in ("out", "model")]
