"""Issue 21, defects 2, 3 and 5: strategies do what they say, or the flow is refused.

Secure aggregation and DP never swap a strategy silently: a server optimizer runs on the
securely aggregated mean (exact), a strategy that reads each update is a build-time
error saying why. FedProx's ``mu`` reaches the trainers. A trimmed mean that trims
nothing is a build-time warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowfed.api import load_artifact
from tests.federated.conftest import errors, run_cli, run_json, write_flow

NO_MU = """
import pandas as pd
from flowfed.tools import Context, tool
from flowfed.tools.library.models import LogisticRegressionModel, logistic_regression


@tool(name="test.no_mu", version="1", type="analysis")
def no_mu(train: pd.DataFrame, ctx: Context,
          global_model: LogisticRegressionModel | None = None, *,
          epochs: int = 5, learning_rate: float = 0.5) -> LogisticRegressionModel:
    return logistic_regression(train, ctx, global_model, epochs=epochs,
                               learning_rate=learning_rate)
"""


def _weights(result: dict, home: Path) -> np.ndarray:
    model = load_artifact(
        result["summary"]["model"]["id"],
        database_url=f"sqlite:///{home / 'flowfed.db'}",
        artifacts_url=str(home / "artifacts"),
    )
    return np.concatenate([np.ravel(w) for w in model.get_weights()])


def _run(hospitals: Path, tmp: Path, **kw: object) -> np.ndarray:
    tmp.mkdir()
    flow = write_flow(tmp, hospitals / "nodes.yaml", **kw)  # type: ignore[arg-type]
    result = run_json(["run", str(flow), "--simulate"], tmp / "home")
    assert result["status"] == "success", errors(result)
    return _weights(result, tmp / "home")


@pytest.mark.parametrize(
    ("federated", "words"),
    [({"strategy": "median", "secure_aggregation": True}, "only ever learns their sum"),
     ({"strategy": "trimmed_mean", "secure_aggregation": True}, "only ever learns their sum"),
     ({"strategy": "krum", "secure_aggregation": True}, "only ever learns their sum"),
     ({"strategy": "median", "privacy": {"clip_norm": 1.0, "noise_multiplier": 1.0}},
      "no guarantee for 'median'"),
     ({"strategy": "clipped_mean", "privacy": {"clip_norm": 1.0, "noise_multiplier": 1.0}},
      "privacy already clips")],
)  # fmt: skip
def test_impossible_combinations_are_build_time_errors(
    hospitals: Path, tmp_path: Path, federated: dict, words: str
) -> None:
    flow = write_flow(tmp_path, hospitals / "nodes.yaml", federated=federated)
    proc = run_cli(["validate", str(flow)], tmp_path / "home")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert words in proc.stderr and "flow.yaml:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_fedadam_under_secure_aggregation_is_fedadam(hospitals: Path, tmp_path: Path) -> None:
    """Before: FedAvg's weights. Now: FedAdam on the securely summed mean, equal to plain
    FedAdam up to the fixed-point encoding (2^-24)."""
    adam = {"strategy": "fedadam", "strategy_config": {"eta": 0.05, "tau": 0.01}}
    config = {"rounds": 3}
    plain = _run(hospitals, tmp_path / "plain", config=config, federated=adam)
    secure = _run(
        hospitals, tmp_path / "secure", config=config,
        federated={**adam, "secure_aggregation": True},
    )  # fmt: skip
    fedavg = _run(
        hospitals, tmp_path / "fedavg", config=config, federated={"secure_aggregation": True}
    )
    np.testing.assert_allclose(secure, plain, atol=1e-5)
    assert np.abs(secure - fedavg).max() > 1e-2


def test_fedprox_mu_reaches_the_trainers(hospitals: Path, tmp_path: Path) -> None:
    config = {"rounds": 2}
    by_strategy = _run(
        hospitals, tmp_path / "strategy", config=config,
        federated={"strategy": "fedprox", "strategy_config": {"mu": 1.0}},
    )  # fmt: skip
    by_trainer = _run(hospitals, tmp_path / "trainer", config=config, trainer_params={"mu": 1.0})
    fedavg = _run(hospitals, tmp_path / "fedavg", config=config)
    np.testing.assert_array_equal(by_strategy, by_trainer)
    assert np.abs(by_strategy - fedavg).max() > 1e-3


def test_fedprox_with_a_trainer_without_mu_is_refused(hospitals: Path, tmp_path: Path) -> None:
    (tmp_path / "trainers.py").write_text(NO_MU)
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", federated={"strategy": "fedprox"},
        imports=[str(tmp_path / "trainers.py")], trainer="test.no_mu",
    )  # fmt: skip
    proc = run_cli(["validate", str(flow)], tmp_path / "home")
    assert proc.returncode == 2
    assert "trainer 'test.no_mu' has no 'mu' config field" in proc.stderr


def test_trimmed_mean_that_trims_nothing_is_a_warning(hospitals: Path, tmp_path: Path) -> None:
    flow = write_flow(tmp_path, hospitals / "nodes.yaml", config={"strategy": "trimmed_mean"})
    proc = run_cli(["validate", str(flow)], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert "trims nothing at 3 nodes" in proc.stderr
    assert "smallest beta that trims one node from each end is 0.3333" in proc.stderr
    flow = write_flow(
        tmp_path, hospitals / "nodes.yaml", config={"strategy": "trimmed_mean"},
        federated={"strategy_config": {"beta": 0.34}},
    )  # fmt: skip
    proc = run_cli(["validate", str(flow)], tmp_path / "home")
    assert proc.returncode == 0 and "warning" not in proc.stderr
