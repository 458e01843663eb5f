"""The Breast Cancer Detection Flow with in-process nodes (``--simulate``), end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowfed.db import Database
from tests.federated.conftest import errors, run_cli, run_json, tasks_of, write_flow

TRAINERS = """
import time
import pandas as pd
from flowfed.tools import Context, tool
from flowfed.tools.library.models import LogisticRegressionModel, logistic_regression


@tool(name="test.slow_on_b", version="1", type="analysis")
def slow_on_b(train: pd.DataFrame, ctx: Context,
              global_model: LogisticRegressionModel | None = None, *,
              epochs: int = 5, learning_rate: float = 0.5) -> LogisticRegressionModel:
    if ctx.node == "hospital-b":
        time.sleep(4)
    return logistic_regression(train, ctx, global_model, epochs=epochs,
                                           learning_rate=learning_rate)


@tool(name="test.fails_on_c", version="1", type="analysis")
def fails_on_c(train: pd.DataFrame, ctx: Context,
               global_model: LogisticRegressionModel | None = None, *,
               epochs: int = 5, learning_rate: float = 0.5) -> LogisticRegressionModel:
    if ctx.node == "hospital-c":
        raise RuntimeError("disk full at hospital C")
    return logistic_regression(train, ctx, global_model, epochs=epochs,
                                           learning_rate=learning_rate)
"""


def simulate(flow: Path, home: Path, *extra: str) -> dict:
    return run_json(["run", str(flow), "--simulate", *extra], home)


def test_main_job_simulated_matches_centralized(hospitals: Path, tmp_path: Path) -> None:
    flow = write_flow(tmp_path, hospitals / "nodes.yaml")
    home = tmp_path / "home"
    result = simulate(flow, home)
    assert result["status"] == "success", errors(result)
    summary = result["summary"]
    metrics = summary["metrics"]
    assert summary["rounds"] == 30 and summary["mode"] == "simulate"
    assert set(metrics["sites"]) == {"hospital-a:breast", "hospital-b:breast", "hospital-c:breast"}
    assert metrics["pooled"]["rows"] == 114  # every test row, counted once
    fed, central = metrics["pooled"]["accuracy"], metrics["centralized"]["accuracy"]
    assert fed >= central - 0.01, (fed, central)
    assert metrics["pooled"]["roc_auc"] > 0.98
    # Seed 000's Task_2A/2B/2C: per round, one training task per hospital and one
    # aggregation; plus the step's own task.
    training = tasks_of(result, "Federated Training")
    assert len(training) == 30 * 4 + 1
    round3 = [t for t in training if t.get("round") == 3]
    assert sorted(t["node"] for t in round3) == ["hospital-a", "hospital-b", "hospital-c", "local"]
    # Seed 000's four steps, the tasks of each under it, labelled in words.
    assert [(s["name"], s.get("type")) for s in result["steps"]] == [
        ("Data Preprocessing", "process"), ("Federated Training", "process"),
        ("Model Validation", "process"), ("Model Packaging", "output"),
    ]  # fmt: skip
    assert {t["label"] for t in round3} == {
        "Local model training (hospital-a)", "Local model training (hospital-b)",
        "Local model training (hospital-c)", "Model aggregation (central)",
    }  # fmt: skip
    assert len(tasks_of(result, "Data Preprocessing")) == 5 * 3 + 1
    preprocessing = tasks_of(result, "Data Preprocessing", "Feature normalization")
    assert sorted((t["node"], t["dataset"]) for t in preprocessing) == [
        ("hospital-a", "breast"), ("hospital-b", "breast"), ("hospital-c", "breast"),
    ]  # fmt: skip


def test_round_lineage(hospitals: Path, tmp_path: Path) -> None:
    """global(r) ← updates(r) ← global(r-1) and each node's training data artifact."""
    flow = write_flow(tmp_path, hospitals / "nodes.yaml", config={"rounds": 3})
    home = tmp_path / "home"
    result = simulate(flow, home)
    assert result["status"] == "success", errors(result)
    with Database(f"sqlite:///{home / 'flowfed.db'}") as db:
        final = db.get_artifact(result["summary"]["model"]["id"])
        assert final is not None and final["producer"]["step"] == "Federated Training"
        parents = [db.get_artifact(p) for p in final["parents"]]
        names = sorted(p["name"] for p in parents if p)
        assert names == [
            "model",  # round 2's global model
            "model.update[hospital-a:breast]",
            "model.update[hospital-b:breast]",
            "model.update[hospital-c:breast]",
        ]
        update = next(p for p in parents if p and p["name"].startswith("model.update[hospital-a"))
        # An update stays on its node unless shareable: updates are (they travel to the
        # aggregator); its parents are the round's global model and that node's data.
        assert update["node"] == "hospital-a" and update["shareable"]
        up_parents = [db.get_artifact(p) for p in update["parents"]]
        assert sorted(p["name"] for p in up_parents if p) == ["model", "train[hospital-a:breast]"]
        data = next(p for p in up_parents if p and p["name"].startswith("train["))
        assert data["uri"].startswith("node://hospital-a/") and not data["shareable"]
        # Rounds share ancestors at every level: the lineage tree expands each one once.
        tree = db.lineage(final["id"])
        count = 0
        stack = [tree]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node["parents"])
        run_arts = db.list_artifacts(run_id=result["run_id"], limit=10_000)
        assert count < 3 * len(run_arts)


@pytest.mark.parametrize(
    ("strategy", "extra"),
    [("fedadam", {"strategy_config": {"eta": 0.05, "tau": 0.01}}), ("median", {}),
     ("trimmed_mean", {"strategy_config": {"beta": 0.2}}),
     ("fedprox", {"strategy_config": {"mu": 0.1}})],
)  # fmt: skip
def test_strategies_run(hospitals: Path, tmp_path: Path, strategy: str, extra: dict) -> None:
    flow = write_flow(
        tmp_path,
        hospitals / "nodes.yaml",
        config={"rounds": 5, "strategy": strategy},
        federated=extra,
        trainer_params={"mu": 0.1} if strategy == "fedprox" else None,
    )
    result = simulate(flow, tmp_path / "home")
    assert result["status"] == "success", errors(result)
    assert result["summary"]["metrics"]["pooled"]["accuracy"] > 0.85


def test_secure_aggregation_keeps_updates_on_nodes(hospitals: Path, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 5},
        federated={"secure_aggregation": True},
    )  # fmt: skip
    home = tmp_path / "home"
    result = simulate(flow, home)
    assert result["status"] == "success", errors(result)
    assert result["summary"]["metrics"]["pooled"]["accuracy"] > 0.9
    with Database(f"sqlite:///{home / 'flowfed.db'}") as db:
        arts = db.list_artifacts(run_id=result["run_id"], limit=10_000)
    updates = [a for a in arts if a["name"].startswith("model.update[")]
    masked = [a for a in arts if a["name"].startswith("model.masked[")]
    assert len(updates) == 15 and len(masked) == 15
    # The server never holds an update: no bytes, an address on its node.
    assert all(not a["shareable"] and a["uri"].startswith("node://") for a in updates)
    assert all(a["shareable"] for a in masked)


def test_differential_privacy_reports_epsilon(hospitals: Path, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 4},
        federated={"privacy": {"clip_norm": 5.0, "noise_multiplier": 0.8, "delta": 1e-5}},
    )  # fmt: skip
    result = simulate(flow, tmp_path / "home")
    assert result["status"] == "success", errors(result)
    step = next(t for t in tasks_of(result, "Federated Training") if "round" not in t)
    eps = step["metrics"]["dp_epsilon"]
    assert 0 < eps < float("inf")


def test_straggler_dropped_after_round_timeout(hospitals: Path, tmp_path: Path) -> None:
    (tmp_path / "trainers.py").write_text(TRAINERS)
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 2},
        federated={"round_timeout": 1.5, "min_nodes": 2},
        imports=[str(tmp_path / "trainers.py")], trainer="test.slow_on_b",
    )  # fmt: skip
    result = simulate(flow, tmp_path / "home")
    assert result["status"] == "success", errors(result)
    late = [t for t in tasks_of(result, "Federated Training") if t["node"] == "hospital-b"]
    assert late and all(t["status"] == "cancelled" for t in late)
    on_time = [t for t in tasks_of(result, "Federated Training") if t["node"] == "hospital-a"]
    assert all(t["status"] == "finished" for t in on_time)


def test_failed_node_is_dropped_or_fails_the_step(hospitals: Path, tmp_path: Path) -> None:
    (tmp_path / "trainers.py").write_text(TRAINERS)
    common = {"imports": [str(tmp_path / "trainers.py")], "trainer": "test.fails_on_c"}
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 2}, federated={"min_nodes": 2},
        **common,
    )  # fmt: skip
    result = simulate(flow, tmp_path / "home")
    assert result["status"] == "success", errors(result)
    strict = tmp_path / "strict"
    strict.mkdir()
    flow = write_flow(
        strict, hospitals / "nodes.yaml", config={"rounds": 2}, federated={"min_nodes": 3},
        **common,
    )  # fmt: skip
    result = simulate(flow, strict / "home")
    assert result["status"] == "failed"
    message = next(m for m in errors(result) if "min_nodes" in m)
    assert "hospital-c" in message and "disk full at hospital C" in message


def test_early_stopping(hospitals: Path, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 30},
        federated={"early_stopping": {"metric": "loss", "patience": 2, "min_delta": 10.0}},
    )  # fmt: skip
    result = simulate(flow, tmp_path / "home")
    assert result["status"] == "success", errors(result)
    # No loss improves by 10: rounds 2 and 3 are stale, so training ends after round 3.
    assert result["summary"]["rounds"] == 3


def test_hundred_simulated_nodes(tmp_path: Path) -> None:
    from tests.federated.conftest import EXAMPLE

    data = tmp_path / "data"
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), "--out", str(data), "--hospitals",
         "100", "--quiet"], check=True,
    )  # fmt: skip
    flow = write_flow(tmp_path, data / "nodes.yaml", config={"rounds": 10})
    result = simulate(flow, tmp_path / "home", "-p", "datasets=*:breast")
    assert result["status"] == "success", errors(result)[:3]
    assert len(result["summary"]["metrics"]["sites"]) == 100
    assert result["summary"]["rounds"] == 10
    assert result["summary"]["metrics"]["pooled"]["rows"] == 114


def test_placed_flow_without_nodes_is_refused(hospitals: Path, tmp_path: Path) -> None:
    flow = write_flow(tmp_path, hospitals / "nodes.yaml")
    text = flow.read_text().replace(f"nodes: {hospitals / 'nodes.yaml'}\n", "")
    flow.write_text(text)
    proc = run_cli(["run", str(flow)], tmp_path / "home")
    assert proc.returncode != 0
    assert "places steps on data nodes" in proc.stderr and "--nodes" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_subvariants_train_and_compare_side_by_side(hospitals: Path, tmp_path: Path) -> None:
    import json

    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 3},
        sweep={"learning_rate": [0.05, 0.5]},
    )  # fmt: skip
    home = tmp_path / "home"
    result = simulate(flow, home)
    assert result["status"] == "success", errors(result)
    variants = result["summary"]["variants"]
    assert set(variants) == {"learning_rate=0.05", "learning_rate=0.5"}
    # Each subvariant was validated and summarized on its own.
    assert len(tasks_of(result, "Model Validation", "Local validation")) == 6
    assert len(tasks_of(result, "Model Validation", "Pooled metrics")) == 2
    low = variants["learning_rate=0.05"]["pooled"]["accuracy"]
    high = variants["learning_rate=0.5"]["pooled"]["accuracy"]
    assert low != high
    listed = run_cli(["models", "list", "--json"], home)
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)["items"]
    swept = {json.dumps(i["variant"], sort_keys=True): i["artifact_id"] for i in items}
    assert set(swept) == {'{"learning_rate": 0.05}', '{"learning_rate": 0.5}'}
    compared = run_cli(["models", "compare", *swept.values(), "--json"], home)
    assert compared.returncode == 0, compared.stderr
    assert json.loads(compared.stdout)["variants"]["learning_rate"] == [0.05, 0.5] or json.loads(
        compared.stdout
    )["variants"]["learning_rate"] == [0.5, 0.05]


def test_secure_aggregation_survives_a_node_dropping_after_keys(
    hospitals: Path, tmp_path: Path
) -> None:
    """hospital-c publishes its keys, then fails training: the survivors reveal their
    pair seeds with it and the secure sum still comes out (Bonawitz et al. 2017)."""
    (tmp_path / "trainers.py").write_text(TRAINERS)
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 2},
        federated={"secure_aggregation": True, "min_nodes": 2},
        imports=[str(tmp_path / "trainers.py")], trainer="test.fails_on_c",
    )  # fmt: skip
    home = tmp_path / "home"
    result = simulate(flow, home)
    assert result["status"] == "success", errors(result)
    with Database(f"sqlite:///{home / 'flowfed.db'}") as db:
        names = [a["name"] for a in db.list_artifacts(run_id=result["run_id"], limit=10_000)]
    assert sum(n.startswith("model.public_key[") for n in names) == 6  # 3 nodes x 2 rounds
    assert sum(n.startswith("model.seeds[") for n in names) == 4  # a and b reveal, per round
    assert sum(n.startswith("model.masked[") for n in names) == 4
    assert result["summary"]["metrics"]["pooled"]["accuracy"] > 0.85


def test_on_named_nodes(hospitals: Path, tmp_path: Path) -> None:
    (tmp_path / "where.py").write_text(
        "from flowfed.tools import Context, tool\n\n"
        "@tool(name='test.where', version='1', type='data-transformation')\n"
        "def where(ctx: Context) -> dict:\n"
        "    return {'node': ctx.node, 'dataset': ctx.dataset}\n\n"
        "@tool(name='test.collect', version='1', type='data-transformation')\n"
        "def collect(items: list[dict], ctx: Context) -> dict:\n"
        "    return {'nodes': [i['node'] for i in items]}\n"
    )
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        f"name: named nodes\nimports: [{tmp_path / 'where.py'}]\n"
        f"nodes: {hospitals / 'nodes.yaml'}\nreport: seen\n"
        "steps:\n"
        "  - {name: ask, tool: test.where, 'on': {nodes: [hospital-c, hospital-a]},\n"
        "     outputs: [answer], shareable: [answer]}\n"
        "  - {name: gather, tool: test.collect, inputs: {items: answer}, outputs: [seen]}\n"
    )
    result = simulate(flow, tmp_path / "home")
    assert result["status"] == "success", errors(result)
    assert result["summary"]["metrics"] == {"nodes": ["hospital-c", "hospital-a"]}
    assert sorted(t["node"] for t in tasks_of(result, "ask")) == ["hospital-a", "hospital-c"]


def test_secure_aggregation_with_differential_privacy(hospitals: Path, tmp_path: Path) -> None:
    """Nodes mask their clipped change; the server noises the unmasked sum and accounts ε."""
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 3},
        federated={"secure_aggregation": True,
                   "privacy": {"clip_norm": 5.0, "noise_multiplier": 0.3}},
    )  # fmt: skip
    result = simulate(flow, tmp_path / "home")
    assert result["status"] == "success", errors(result)
    step = next(t for t in tasks_of(result, "Federated Training") if "round" not in t)
    assert step["metrics"]["dp_epsilon"] > 0
    assert result["summary"]["metrics"]["pooled"]["accuracy"] > 0.6


def test_torch_trainer_in_a_federated_step(hospitals: Path, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 3, "learning_rate": 0.3},
        trainer="flowfed.torch_mlp", trainer_params={"hidden": 8},
    )  # fmt: skip
    result = run_json(["run", str(flow), "--simulate"], tmp_path / "home")
    assert result["status"] == "success", errors(result)
    assert result["summary"]["metrics"]["pooled"]["accuracy"] > 0.8
