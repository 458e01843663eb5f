"""Issue 21, evaluation during training: federated (per node, pooled by rows) and central.

The reference is independent of flowfed: the pooled validation figures of the final
round must equal scikit-learn's ``accuracy_score`` and ``log_loss`` of the same global
model (its weights, applied with numpy) on every hospital's test rows pooled, read from
the hospitals' CSVs and standardized with the run's pooled statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import accuracy_score, log_loss
from sqlalchemy import select

from flowfed.api import load_artifact
from flowfed.db import Database
from flowfed.db import models as m
from tests.federated.conftest import errors, run_cli, run_json, write_flow


def eval_flow(folder: Path, layout: Path, **federated: Any) -> Path:
    """The example flow whose federated step also takes each hospital's test split."""
    path = write_flow(folder, layout, federated={"validation": "test", **federated})
    flow = yaml.safe_load(path.read_text())
    step = next(s for s in flow["steps"] if s.get("kind") == "federated")
    step["inputs"]["test"] = "test"
    path.write_text(yaml.safe_dump(flow, sort_keys=False))
    return path


def step_metrics(home: Path) -> list[tuple[str, float, int | None, str, int | None]]:
    db = Database(f"sqlite:///{home / 'flowfed.db'}")
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(
                select(m.metrics.c.name, m.metrics.c.value, m.metrics.c.step, m.tasks.c.node,
                       m.tasks.c.round)
                .join(m.tasks, m.tasks.c.id == m.metrics.c.task_id)
                .where(m.tasks.c.step == "Federated Training")
            ).all()  # fmt: skip
    finally:
        db.close()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def pooled_test_rows(hospitals: Path, stats: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray]:
    tables = [pd.read_csv(p) for p in sorted(hospitals.glob("hospital-*/breast.csv"))]
    test = pd.concat([t[t["split"] == "test"] for t in tables], ignore_index=True)
    return test, test["target"].to_numpy(dtype=float)


def test_pooled_validation_equals_sklearn_on_pooled_rows(hospitals: Path, tmp_path: Path) -> None:
    flow = eval_flow(
        tmp_path, hospitals / "nodes.yaml", rounds=3,
        evaluate_fn="breast_cancer.central_evaluate",
    )  # fmt: skip
    flow_cfg = yaml.safe_load(flow.read_text())
    flow_cfg["config"]["rounds"] = 3
    flow.write_text(yaml.safe_dump(flow_cfg, sort_keys=False))
    home = tmp_path / "home"
    result = run_json(["run", str(flow), "--simulate"], home)
    assert result["status"] == "success", errors(result)
    urls = {"database_url": f"sqlite:///{home / 'flowfed.db'}",
            "artifacts_url": str(home / "artifacts")}  # fmt: skip
    model = load_artifact(result["summary"]["model"]["id"], **urls)
    stats = load_artifact("stats", **urls)
    test, y = pooled_test_rows(hospitals, stats)
    w, b = model.get_weights()
    x = np.column_stack([(test[f] - stats["mean"][f]) / stats["std"][f] for f in model.features])
    proba = 1.0 / (1.0 + np.exp(-(x @ w + b[0])))
    want_acc = accuracy_score(y, proba >= 0.5)
    want_loss = log_loss(y, proba)

    got = step_metrics(home)
    central = {(n, s): v for n, v, s, node, _ in got if node == "local" and s is not None}
    for r in (1, 2, 3):  # every round evaluated, pooled on the step's task
        assert {("val_loss", r), ("val_accuracy", r), ("central_loss", r)} <= set(central)
    assert central[("val_accuracy", 3)] == pytest.approx(want_acc, abs=1e-12)
    assert central[("val_loss", 3)] == pytest.approx(want_loss, rel=1e-9)
    assert central[("val_rows", 3)] == len(y) == 114
    # Per node: each hospital's evaluation task holds its own figures for the round.
    per_node = [(n, node, s) for n, _, s, node, rnd in got if node != "local" and rnd == 3
                and n == "val_accuracy"]  # fmt: skip
    assert sorted(node for _, node, _ in per_node) == ["hospital-a", "hospital-b", "hospital-c"]
    assert all(s == 3 for _, _, s in per_node)
    # The run summary and --json carry the last evaluation.
    ev = result["summary"]["evaluation"]
    assert ev["round"] == 3 and ev["val_accuracy"] == pytest.approx(want_acc, abs=1e-12)
    # central evaluation on the public copy of the same test rows agrees
    assert ev["central_accuracy"] == pytest.approx(want_acc, abs=1e-12)
    text = run_cli(["run", str(flow), "--simulate"], tmp_path / "h2")
    assert text.returncode == 0, text.stderr
    assert "evaluation after round 3: val_loss" in text.stdout


def test_fraction_and_every(hospitals: Path, tmp_path: Path) -> None:
    flow = eval_flow(tmp_path, hospitals / "nodes.yaml", evaluate_every=2, fraction_evaluate=0.5)
    cfg = yaml.safe_load(flow.read_text())
    cfg["config"]["rounds"] = 5
    flow.write_text(yaml.safe_dump(cfg, sort_keys=False))
    home = tmp_path / "home"
    result = run_json(["run", str(flow), "--simulate"], home)
    assert result["status"] == "success", errors(result)
    got = step_metrics(home)
    pooled_rounds = sorted({s for n, _, s, node, _ in got if node == "local" and n == "val_loss"})
    assert pooled_rounds == [2, 4, 5]  # every 2nd round and the last
    for r in pooled_rounds:  # ceil(0.5 * 3) = 2 hospitals evaluate
        nodes = {node for n, _, _, node, rnd in got if n == "val_loss" and node != "local"
                 and rnd == r}  # fmt: skip
        assert len(nodes) == 2, (r, nodes)


def test_early_stopping_on_validation_metric(hospitals: Path, tmp_path: Path) -> None:
    # An improvement of more than 1.0 in accuracy is impossible: after the first
    # evaluation, `patience` evaluations without one stop the rounds.
    flow = eval_flow(
        tmp_path, hospitals / "nodes.yaml",
        early_stopping={"metric": "val_accuracy", "mode": "max", "patience": 2,
                        "min_delta": 1.0},
    )  # fmt: skip
    result = run_json(["run", str(flow), "--simulate"], tmp_path / "home")
    assert result["status"] == "success", errors(result)
    assert result["summary"]["rounds"] == 3
    assert result["summary"]["evaluation"]["round"] == 3


def test_bad_evaluation_settings_are_build_errors(hospitals: Path, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml",
        federated={"validation": "holdout", "evaluate_fn": "nowhere.eval"},
    )  # fmt: skip
    proc = run_cli(["run", str(flow), "--simulate"], tmp_path / "home")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "validation 'holdout' is not an input of the step" in out
    assert "unknown evaluation function 'nowhere.eval'" in out
