"""Issue 21, defect 5: one label-flipped hospital of three.

The poisoned hospital trains on flipped labels and boosts its change from the global
model tenfold (the usual model-poisoning attack). FedAvg follows it; every robust
strategy stays within 3 accuracy points of clean FedAvg (pooled accuracy over all
hospitals' test rows).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.federated.conftest import errors, run_json, write_flow

FLIPPED = """
import pandas as pd
from flowfed.tools import Context, tool
from flowfed.tools.library.models import LogisticRegressionModel, logistic_regression


@tool(name="test.flipped_on_c", version="1", type="analysis")
def flipped_on_c(train: pd.DataFrame, ctx: Context,
                 global_model: LogisticRegressionModel | None = None, *,
                 epochs: int = 5, learning_rate: float = 0.5,
                 mu: float = 0.0) -> LogisticRegressionModel:
    if ctx.node != "hospital-c":
        return logistic_regression(train, ctx, global_model, epochs=epochs,
                                   learning_rate=learning_rate, mu=mu)
    flipped = train.assign(target=1 - train["target"])  # every label flipped
    model = logistic_regression(flipped, ctx, global_model, epochs=epochs,
                                learning_rate=learning_rate, mu=mu)
    start = (global_model.get_weights() if global_model is not None
             else [0 * w for w in model.get_weights()])
    boosted = [g + 10 * (w - g) for w, g in zip(model.get_weights(), start)]
    out = model.with_weights(boosted)
    out.training = model.training
    return out
"""


def _accuracy(hospitals: Path, tmp: Path, strategy: str, config: dict, poisoned: bool) -> float:
    tmp.mkdir()
    extra: dict = {}
    if poisoned:
        (tmp / "trainers.py").write_text(FLIPPED)
        extra = {"imports": [str(tmp / "trainers.py")], "trainer": "test.flipped_on_c"}
    flow = write_flow(
        tmp, hospitals / "nodes.yaml", config={"strategy": strategy},
        federated={"strategy_config": config}, **extra,
    )  # fmt: skip
    result = run_json(["run", str(flow), "--simulate"], tmp / "home")
    assert result["status"] == "success", errors(result)
    accuracy = float(result["summary"]["metrics"]["pooled"]["accuracy"])
    print(f"{strategy} poisoned={poisoned}: pooled accuracy {accuracy:.4f}")
    return accuracy


@pytest.fixture(scope="module")
def clean(hospitals: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    return _accuracy(hospitals, tmp_path_factory.mktemp("clean") / "run", "fedavg", {}, False)


def test_fedavg_follows_the_poisoned_node(hospitals: Path, tmp_path: Path, clean: float) -> None:
    assert _accuracy(hospitals, tmp_path / "run", "fedavg", {}, True) < clean - 0.1


@pytest.mark.parametrize(
    ("strategy", "config"),
    [("median", {}), ("trimmed_mean", {"beta": 0.34}), ("krum", {"num_malicious": 1}),
     ("multikrum", {"num_malicious": 1}), ("clipped_mean", {})],
)  # fmt: skip
def test_robust_strategies_hold(
    hospitals: Path, tmp_path: Path, clean: float, strategy: str, config: dict
) -> None:
    poisoned = _accuracy(hospitals, tmp_path / "run", strategy, config, True)
    assert poisoned >= clean - 0.03, (strategy, poisoned, clean)
