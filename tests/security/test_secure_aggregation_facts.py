"""Red team: under secure aggregation, what a node's own figures reveal stays on the node.

The attack of issue 18 (6): with `secure_aggregation: true`, each node's example count,
per-epoch loss and train accuracy were stored centrally every round, its logs said
"trained on 277 rows", and the evaluation shared a 1000-bin score histogram of 16-68
test rows. The main job runs here on real, sandboxed node agents under the default
policy; the central database must hold none of those per-node facts.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from flowfed.db import Database
from flowfed.db import models as m
from tests.federated.conftest import errors, hospitals, run_json, write_flow  # noqa: F401

PER_NODE_FACTS = {"examples", "loss", "train_accuracy"}


def test_secure_rounds_keep_per_node_counts_losses_and_logs_on_the_nodes(
    hospitals: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 2},
        federated={"secure_aggregation": True},
    )  # fmt: skip
    home = tmp_path / "home"
    result = run_json(["run", str(flow)], home, timeout=900)
    assert result["status"] == "success", errors(result)
    assert result["summary"]["metrics"]["pooled"]["accuracy"] > 0.85

    db = Database(f"sqlite:///{home / 'flowfed.db'}")
    try:
        with db.engine.connect() as conn:
            tasks = {r.id: r for r in conn.execute(select(m.tasks))}
            metrics = list(conn.execute(select(m.metrics)))
            logs = list(conn.execute(select(m.logs)))
            arts = [dict(r._mapping) for r in conn.execute(select(m.artifacts))]
    finally:
        db.close()
    trained = {
        tid
        for tid, t in tasks.items()
        if t.step == "Federated Training" and t.node != "local" and "regression" in t.tool
    }
    assert len(trained) == 6  # 2 rounds x 3 hospitals ran, on their nodes
    leaked = [(r.name, r.value) for r in metrics if r.task_id in trained]
    assert not [x for x in leaked if x[0] in PER_NODE_FACTS], leaked
    # Every node log line reached the server as a level and a pointer, never its text.
    node_tasks = {tid for tid, t in tasks.items() if t.node != "local"}
    node_logs = [r.message for r in logs if r.task_id in node_tasks]
    assert node_logs and all("kept on node" in msg for msg in node_logs), node_logs[:5]
    assert not any("trained on" in r.message for r in logs)

    # The evaluations that left are k-safe: every histogram range holds at least 5 rows,
    # and no count below 5 is anywhere in them.
    with Database(f"sqlite:///{home / 'flowfed.db'}") as db2:
        scores = [a for a in arts if a["name"].startswith("scores[")]
        assert len(scores) == 3
        for a in scores:
            body = json.loads(_blob(db2, a["hash"]))
            hist = body["score_histogram"]
            if hist is not None:
                for ranges in (hist["positive"], hist["negative"]):
                    assert all(r["count"] >= 5 for r in ranges), ranges
            assert all(r["count"] >= 5 for r in body["calibration"]["reliability"])
            for cell in body["confusion_matrix"].values():
                assert cell is None or cell == 0 or cell >= 5


def _blob(db: Database, digest: str) -> bytes:
    with db.engine.connect() as conn:
        row = conn.execute(select(m.blobs.c.data).where(m.blobs.c.hash == digest)).first()
    assert row is not None, f"no catalog blob {digest[:12]}"
    return bytes(row[0])
