"""Red team: federated evaluation takes nothing of a node's rows to the central side.

Marker bytes are planted in hospital A's data: a text column whose every value carries
the marker (it travels with the rows through every node-side table, the validation split
included). The main job then runs with
evaluation every round on real, sandboxed node agents under the default policy. The
evaluation path (the node's evaluation task, its metrics, logs and output, and under
secure aggregation the masked sums) must bring none of it to the server's home, its
catalog or artifact store; under secure aggregation the server must also store no
per-node validation figure, only the pooled one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pandas as pd
import yaml
from sqlalchemy import select

from flowfed.db import Database
from flowfed.db import models as m
from tests.federated.conftest import errors, hospitals, run_json, write_flow  # noqa: F401
from tests.security.central import find_marker

VAL = {"val_loss", "val_accuracy", "val_rows"}
#: The sandbox imports flowfed from the installation's editable path; a git worktree
#: under test runs its own tree through PYTHONPATH, which the subprocess runner keeps.
#: The policy under test is the node agent's, the same with either runner.
RUNNER = ["--node-runner", "subprocess"] if os.environ.get("PYTHONPATH") else []


def _planted(hospitals: Path, tmp: Path) -> tuple[Path, str, list[str]]:  # noqa: F811
    data = tmp / "data"
    shutil.copytree(hospitals, data)
    marker = "MARK-" + uuid.uuid4().hex
    layout = data / "nodes.yaml"
    layout.write_text(layout.read_text().replace(str(hospitals), str(data)))
    csv = data / "hospital-a" / "breast.csv"
    table = pd.read_csv(csv)
    features = [c for c in table.columns if c not in ("target", "split")]
    table.insert(0, "note", [f"{marker}-row{i}" for i in range(len(table))])
    table.to_csv(csv, index=False)
    return layout, marker, features


def _flow(tmp: Path, layout: Path, features: list[str], **federated: object) -> Path:
    # The trainer names its features: the text column is not one (it stays in the tables).
    path = write_flow(
        tmp, layout, config={"rounds": 2}, federated={"validation": "test", **federated},
        trainer_params={"features": features},
    )  # fmt: skip
    flow = yaml.safe_load(path.read_text())
    step = next(s for s in flow["steps"] if s.get("kind") == "federated")
    step["inputs"]["test"] = "test"
    path.write_text(yaml.safe_dump(flow, sort_keys=False))
    return path


def _central(home: Path) -> list[Path]:
    """What the central side keeps: the run's home bar the local node agents' own
    folders (``home/nodes/<node>``, each node's store, which does hold the marker)."""
    paths = [p for p in home.iterdir() if p.name != "nodes"]
    assert any(p.name == "flowfed.db" for p in paths), paths
    return paths


def _metrics(home: Path) -> list[tuple[str, float, int | None, str]]:
    db = Database(f"sqlite:///{home / 'flowfed.db'}")
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(
                select(m.metrics.c.name, m.metrics.c.value, m.metrics.c.step, m.tasks.c.node)
                .join(m.tasks, m.tasks.c.id == m.metrics.c.task_id)
                .where(m.tasks.c.step == "Federated Training")
            ).all()
    finally:
        db.close()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_secure_evaluation_releases_only_the_pooled_figures(
    hospitals: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    layout, marker, features = _planted(hospitals, tmp_path)
    flow = _flow(tmp_path, layout, features, secure_aggregation=True)
    home = tmp_path / "home"
    result = run_json(["run", str(flow), *RUNNER], home, timeout=900)
    assert result["status"] == "success", errors(result)
    got = _metrics(home)
    pooled = {(n, s) for n, _, s, node in got if node == "local" and n in VAL}
    assert {("val_loss", 1), ("val_accuracy", 2), ("val_rows", 2)} <= pooled
    rows = next(v for n, v, s, node in got if node == "local" and n == "val_rows" and s == 2)
    assert rows == 114  # the secure sum covers every hospital's test rows
    per_node = [(n, v, node) for n, v, _, node in got if node != "local" and n in VAL]
    assert per_node == [], per_node
    assert result["summary"]["evaluation"]["val_accuracy"] > 0.85
    assert find_marker(marker.encode(), paths=_central(home)) == []


def test_plain_evaluation_sends_figures_never_rows(
    hospitals: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    layout, marker, features = _planted(hospitals, tmp_path)
    flow = _flow(tmp_path, layout, features)
    home = tmp_path / "home"
    result = run_json(["run", str(flow), *RUNNER], home, timeout=900)
    assert result["status"] == "success", errors(result)
    got = _metrics(home)
    # Each node's policy let its figures out (plain names, finite values, >= 5 rows).
    nodes = {node for n, _, s, node in got if node != "local" and n == "val_accuracy" and s == 2}
    assert nodes == {"hospital-a", "hospital-b", "hospital-c"}
    assert find_marker(marker.encode(), paths=_central(home)) == []
