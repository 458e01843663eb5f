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
