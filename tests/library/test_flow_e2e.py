"""A flow of built-ins only, run by the real ``flowfed`` command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.breast_cancer_flow import PREPARE_STEP_NAMES, PREPARE_STEPS

FLOW = (
    """
name: breast cancer, built-ins only
config:
  epochs: 300
steps:
"""
    + PREPARE_STEPS
    + """\
  - name: fit
    tool: flowfed.logistic_regression
    inputs: {train: train}
    params: {epochs: "${config.epochs}", learning_rate: 0.5}
    outputs: [model]
  - name: evaluate
    tool: flowfed.evaluate_classifier
    inputs: {model: model, test: test}
    outputs: [scores]
  - name: package
    tool: flowfed.package_model
    inputs: {model: model, metrics: scores, train: train}
    params:
      name: breast-cancer-logreg
      data_sources: ["scikit-learn breast cancer Wisconsin (diagnostic)"]
    outputs: [bundle]
"""
)


def flowfed(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FLOWFED_HOME=str(tmp / ".flowfed"), PYTHONUNBUFFERED="1")
    env.pop("FLOWFED_DATABASE_URL", None)
    env.pop("FLOWFED_ARTIFACTS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flowfed", *args, "--import", "flowfed.tools.library"],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def last_task(report: dict[str, Any], step: str) -> dict[str, Any]:
    return next(s for s in report["steps"] if s["name"] == step)["tasks"][-1]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("builtins")
    (tmp / "flow.yaml").write_text(textwrap.dedent(FLOW).lstrip())
    return tmp


def test_planner_accepts_the_builtins_under_the_type_rules(project: Path) -> None:
    res = flowfed(project, "validate", "flow.yaml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_planner_rejects_inputs_on_a_builtin_adapter(project: Path) -> None:
    (project / "bad.yaml").write_text(
        "name: bad\nsteps:\n"
        "  - {name: load, tool: flowfed.sklearn_dataset, params: {name: iris}, outputs: [raw]}\n"
        "  - {name: again, tool: flowfed.csv, inputs: {path: raw}, params: {path: x.csv}}\n"
    )
    res = flowfed(project, "validate", "bad.yaml")
    assert res.returncode == 2
    problems = res.stdout + res.stderr
    assert "step 'again'" in problems and "is of type 'database-adapter'" in problems


def test_flow_of_builtins_runs_end_to_end(project: Path) -> None:
    res = flowfed(project, "run", "flow.yaml", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["status"] == "success"
    assert {s["name"]: s["tasks"][-1]["status"] for s in report["steps"]} == {
        name: "finished" for name in (*PREPARE_STEP_NAMES, "fit", "evaluate", "package")
    }
    scores = last_task(report, "evaluate")["metrics"]
    assert scores["accuracy"] >= 0.95 and scores["roc_auc"] >= 0.98
    assert 0.0 <= scores["ece"] < 0.1
    assert scores["tp"] + scores["fp"] + scores["tn"] + scores["fn"] == 114
    assert last_task(report, "fit")["metrics"]["loss"] < 0.1

    artifacts = {a["name"]: a for a in report["artifacts"]}
    assert {"model", "scores", "bundle"} <= set(artifacts)
    env = dict(os.environ, FLOWFED_HOME=str(project / ".flowfed"))
    env.pop("FLOWFED_DATABASE_URL", None)
    env.pop("FLOWFED_ARTIFACTS_URL", None)
    code = (
        "import flowfed.tools.library, zipfile\n"
        "from flowfed.api import load_artifact\n"
        "z = zipfile.ZipFile(load_artifact('bundle'))\n"
        "print(z.read('MODEL_CARD.md').decode())\n"
    )
    card = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True
    )
    assert card.returncode == 0, card.stderr
    assert "scikit-learn breast cancer Wisconsin" in card.stdout
    assert artifacts["model"]["hash"] in card.stdout  # the card names the model artifact
    assert artifacts["train"]["hash"] in card.stdout  # and the training data it came from

    again = json.loads(flowfed(project, "run", "flow.yaml", "--json").stdout)
    assert {s["tasks"][-1]["status"] for s in again["steps"]} == {"cached"}
