"""Models cross the isolated runners' boundary both ways (output, then input)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FLOW = """
name: models through subprocesses
imports: [flowfed.tools.library]
steps:
  - {name: load, tool: flowfed.sklearn_dataset, params: {name: breast_cancer}, outputs: [raw]}
  - {name: fit, tool: flowfed.logistic_regression, inputs: {train: raw},
     params: {epochs: 2}, outputs: [model]}
  - {name: refit, tool: flowfed.logistic_regression, inputs: {train: raw, global_model: model},
     params: {epochs: 1}, outputs: {output: model2}}
  - {name: score, tool: flowfed.evaluate_classifier, inputs: {model: model2, test: raw},
     outputs: [scores]}
"""


@pytest.mark.parametrize("executor", ["subprocess", "processes"])
def test_a_model_output_is_a_model_input_downstream(tmp_path: Path, executor: str) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWFED_")}
    env["FLOWFED_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-m", "flowfed", "run", str(flow), "--executor", executor, "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    result = json.loads(proc.stdout)
    errors = [t.get("error") for s in result["steps"] for t in s["tasks"] if t.get("error")]
    assert result["status"] == "success", errors


TOOLS = '''
import json
from pathlib import Path

from flowfed import Model, tool


class FileModel(Model):
    """Only the file form: save(path) / load(path)."""

    def __init__(self, w: float) -> None:
        self.w = w

    def save(self, path):
        Path(path).write_text(json.dumps({"w": self.w}))

    @classmethod
    def load(cls, path):
        return cls(json.loads(Path(path).read_text())["w"])


class MemoryModel(FileModel):
    """The in-memory form too; the file form must then go unused on both sides."""

    def save(self, path):
        raise RuntimeError("save(path) used although to_bytes() exists")

    @classmethod
    def load(cls, path):
        raise RuntimeError("load(path) used although from_bytes() exists")

    def to_bytes(self):
        return json.dumps({"w": self.w}).encode()

    @classmethod
    def from_bytes(cls, data):
        return cls(json.loads(data)["w"])


@tool(type="analysis")
def fit_file(w: float = 1.5) -> FileModel:
    return FileModel(w)


@tool(type="analysis")
def fit_memory(w: float = 2.5) -> MemoryModel:
    return MemoryModel(w)


@tool(type="evaluation")
def weight(model: Model) -> dict:
    return {"w": model.w, "cls": type(model).__name__}


@tool(type="evaluation")
def pair(a: dict, b: dict) -> dict:
    return {"file": a, "memory": b}
'''

CUSTOM_FLOW = """
name: user models through subprocesses
imports: [tools]
report: both
steps:
  - {name: fit_file, tool: fit_file, outputs: [file_model]}
  - {name: fit_memory, tool: fit_memory, outputs: [memory_model]}
  - {name: read_file, tool: weight, inputs: {model: file_model}, outputs: [a]}
  - {name: read_memory, tool: weight, inputs: {model: memory_model}, outputs: [b]}
  - {name: both, tool: pair, inputs: {a: a, b: b}, outputs: [both]}
"""


def test_user_models_in_file_and_memory_form_cross_the_boundary(tmp_path: Path) -> None:
    # A model with only save/load goes through files on both sides of the runtime
    # protocol; one with to_bytes/from_bytes never touches its file methods.
    (tmp_path / "tools.py").write_text(TOOLS)
    flow = tmp_path / "flow.yaml"
    flow.write_text(CUSTOM_FLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWFED_")}
    env["FLOWFED_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "flowfed", "run", str(flow), "--executor", "subprocess", "--json"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    result = json.loads(proc.stdout)
    errors = [t.get("error") for s in result["steps"] for t in s["tasks"] if t.get("error")]
    assert result["status"] == "success", errors
    assert result["summary"]["metrics"] == {
        "file": {"w": 1.5, "cls": "FileModel"},
        "memory": {"w": 2.5, "cls": "MemoryModel"},
    }
