"""The strategy API: a user's strategy class in its own tools file, named in the flow.

No patching of flowfed's registry: subclassing ``flowfed.fl.Strategy`` with a ``name``
is enough. Its hooks run: ``configure_fit`` sets each round's trainer config,
``aggregate_fit`` makes the global model, ``aggregate_metrics`` the round's metrics.
"""

from __future__ import annotations

from pathlib import Path

from flowfed.api import load_artifact
from tests.federated.conftest import errors, run_cli, run_json, tasks_of, write_flow

MINE = """
import numpy as np
from flowfed.fl import Strategy, fedavg


class HalfwayAvg(Strategy):
    \"\"\"Moves the global model half way to the FedAvg of the updates.\"\"\"

    name = "test_halfway"
    needs = "mean"  # depends on the updates only through their mean

    def __init__(self, step: float = 0.5, lr_per_round: float = 0.1):
        self.step = step
        self.lr_per_round = lr_per_round

    def configure_fit(self, server_round, participants):
        return {p: {"learning_rate": self.lr_per_round * server_round} for p in participants}

    def aggregate_fit(self, server_round, updates, global_weights):
        avg = fedavg(updates)
        return [g + self.step * (a - g) for a, g in zip(avg, global_weights)]

    def aggregate_metrics(self, server_round, results):
        losses = [m["loss"] for _, _, m in results if "loss" in m]
        return {"worst_loss": max(losses), "nodes_reporting": float(len(losses))}
"""


def test_user_strategy_named_in_the_flow(hospitals: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(MINE)
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"rounds": 3, "strategy": "test_halfway"},
        federated={"strategy_config": {"step": 0.5, "lr_per_round": 0.2}},
        imports=[str(tmp_path / "mine.py")],
    )  # fmt: skip
    home = tmp_path / "home"
    result = run_json(["run", str(flow), "--simulate"], home)
    assert result["status"] == "success", errors(result)
    step = next(t for t in tasks_of(result, "Federated Training") if "round" not in t)
    assert step["metrics"]["nodes_reporting"] == 3.0 and step["metrics"]["worst_loss"] > 0
    model = load_artifact(
        result["summary"]["model"]["id"],
        database_url=f"sqlite:///{home / 'flowfed.db'}",
        artifacts_url=str(home / "artifacts"),
    )
    # configure_fit reached the trainers: round 3 trained at 3 x 0.2
    assert model.training["strategy"] == "test_halfway"
    assert abs(model.training["learning_rate"] - 0.6) < 1e-12
    assert model.training["strategy_config"] == {"step": 0.5, "lr_per_round": 0.2}
    # a mean-only strategy also runs under secure aggregation
    secure = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"strategy": "test_halfway"},
        federated={"secure_aggregation": True}, imports=[str(tmp_path / "mine.py")],
    )  # fmt: skip
    assert run_cli(["validate", str(secure)], home).returncode == 0


def test_unknown_strategy_and_settings_are_located(hospitals: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(MINE)
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"strategy": "test_halfway"},
        federated={"strategy_config": {"stride": 2}}, imports=[str(tmp_path / "mine.py")],
    )  # fmt: skip
    proc = run_cli(["validate", str(flow)], tmp_path / "home")
    assert proc.returncode == 2
    assert "takes no setting 'stride' (it takes step, lr_per_round)" in proc.stderr
    flow = write_flow(tmp_path, hospitals / "nodes.yaml", config={"strategy": "test_halfway"})
    proc = run_cli(["validate", str(flow)], tmp_path / "home")
    assert proc.returncode == 2 and "unknown strategy 'test_halfway'" in proc.stderr
