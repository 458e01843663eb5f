"""A catalog with real trained models: the built-in tools' flow, run by the real CLI.

One project per database (SQLite, then PostgreSQL), shared by a module's tests: the flow
trains ``classifier`` twice with different learning rates (versions 1 and 2) and once more
with the first rate (a cache hit: no version 3), evaluates it on the test and the training
rows, and warm-starts a second model, ``refined``, from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.breast_cancer_flow import PREPARE_STEPS
from tests.conftest import _reset_pg

FLOW = (
    """
name: registry flow
imports: [flowfed.tools.library]
config:
  learning_rate: 0.5
steps:
"""
    + PREPARE_STEPS
    + """\
  - name: fit
    tool: flowfed.logistic_regression
    inputs: {train: train}
    params: {epochs: 100, learning_rate: "${config.learning_rate}"}
    outputs: [classifier]
  - name: evaluate
    tool: flowfed.evaluate_classifier
    inputs: {model: classifier, test: test}
    outputs: [scores]
  - name: evaluate on train
    tool: flowfed.evaluate_classifier
    inputs: {model: classifier, test: train}
    outputs: [train_scores]
  - name: refit
    tool: flowfed.logistic_regression
    inputs: {train: train, global_model: classifier}
    params: {epochs: 5, learning_rate: 0.1}
    outputs: [refined]
"""
)

#: The learning rate of each run, in order (the third is a cache hit of the first).
RATES = (0.5, 0.05, 0.5)


@dataclass
class Catalog:
    """A project folder whose catalog holds the models of :data:`RATES`' runs."""

    root: Path
    env: dict[str, str]
    db_url: str
    reports: list[dict[str, Any]] = field(default_factory=list)

    def ff(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [sys.executable, "-m", "flowfed", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check is not None:
            assert res.returncode == check, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.ff(*args, "--json").stdout)

    def task_metrics(self, run: int, step: str) -> dict[str, float]:
        s = next(s for s in self.reports[run]["steps"] if s["name"] == step)
        return dict(s["tasks"][-1]["metrics"])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def catalog(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Catalog]:
    root = tmp_path_factory.mktemp(f"models-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'flowfed.db'}"
    else:
        url = request.getfixturevalue("pg_database")
        _reset_pg(url)
    env = dict(os.environ)
    env.update(
        FLOWFED_HOME=str(root / ".flowfed"),
        FLOWFED_DATABASE_URL=url,
        FLOWFED_ARTIFACTS_URL=str(root / "artifacts"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("FLOWFED_SERVER", None)
    env.pop("FLOWFED_TOKEN", None)
    (root / "flow.yaml").write_text(textwrap.dedent(FLOW).lstrip())
    cat = Catalog(root, env, url)
    for rate in RATES:
        res = cat.ff("run", "flow.yaml", "--json", "--param", f"learning_rate={rate}")
        cat.reports.append(json.loads(res.stdout))
    yield cat
