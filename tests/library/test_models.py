"""Logistic regression and MLP: accuracy, gradients, FedProx, exact save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowfed.artifacts.materializers import load as load_value
from flowfed.artifacts.materializers import materialize
from flowfed.tools.library.models import (
    LogisticRegressionModel,
    MLPModel,
    _logistic_loss_and_grad,
    _mlp_loss_and_grad,
    logistic_regression,
    mlp,
)
from tests.library.conftest import Recorder

Data = tuple[pd.DataFrame, pd.DataFrame]


def accuracy(model: LogisticRegressionModel | MLPModel, table: pd.DataFrame) -> float:
    return float(np.mean(model.predict(table) == table["target"].to_numpy()))


def test_logistic_regression_centralized_reference_on_breast_cancer(
    breast_cancer: Data, ctx: Recorder
) -> None:
    train, test = breast_cancer
    model = logistic_regression(train, ctx, epochs=300, learning_rate=0.5)
    assert accuracy(model, test) >= 0.95
    losses = ctx.metrics("loss")
    assert len(losses) == 300  # one loss per epoch
    assert losses[-1] < losses[0] and losses[0] == pytest.approx(np.log(2))  # starts at w = 0
    progress = [p["fraction"] for k, p in ctx.events if k == "progress"]
    assert progress[-1] == 1.0
    assert model.features == [c for c in train.columns if c != "target"]


def test_logistic_regression_save_load_round_trips_exactly(
    breast_cancer: Data, ctx: Recorder, tmp_path: Path
) -> None:
    train, test = breast_cancer
    model = logistic_regression(train, ctx, epochs=50, learning_rate=0.5, l2=0.01)
    model.save(tmp_path / "m")
    assert (tmp_path / "m").read_text().lstrip().startswith("{")  # JSON, not pickle
    back = LogisticRegressionModel.load(tmp_path / "m")
    assert np.array_equal(back.weights, model.weights) and back.bias == model.bias
    assert back.features == model.features and back.training == model.training
    assert np.array_equal(back.predict_proba(test), model.predict_proba(test))
    # Through flowfed's own artifact store encoding: model kind, no pickle, exact.
    stored = materialize(model)
    assert stored.kind == "model" and not stored.pickled
    again = load_value(stored.kind, stored.data, stored.meta)
    assert isinstance(again, LogisticRegressionModel)
    assert np.array_equal(again.weights, model.weights)


def test_logistic_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20).astype(float)
    f = _logistic_loss_and_grad(x, y)
    params = [rng.normal(size=3), np.array([0.3])]
    _, grads = f(params)
    for i, p in enumerate(params):
        for j in range(p.size):
            bumped = [q.copy() for q in params]
            bumped[i].flat[j] += 1e-6
            lower = [q.copy() for q in params]
            lower[i].flat[j] -= 1e-6
            numeric = (f(bumped)[0] - f(lower)[0]) / 2e-6
            assert grads[i].flat[j] == pytest.approx(numeric, abs=1e-7)


def test_logistic_regression_one_step_by_hand(ctx: Recorder) -> None:
    # w = 0, b = 0: p = 0.5 everywhere; gradient of w = mean((p - y) x), of b = mean(p - y).
    train = pd.DataFrame({"x": [1.0, -1.0, 2.0], "target": [1, 0, 1]})
    model = logistic_regression(train, ctx, epochs=1, learning_rate=1.0)
    assert model.weights[0] == pytest.approx(-((-0.5) * 1 + 0.5 * -1 + (-0.5) * 2) / 3)
    assert model.bias == pytest.approx(-((-0.5) + 0.5 + (-0.5)) / 3)


def test_fedprox_keeps_local_training_near_the_global_model(
    breast_cancer: Data, ctx: Recorder
) -> None:
    train, _ = breast_cancer
    global_model = LogisticRegressionModel(
        [c for c in train.columns if c != "target"], np.zeros(30), 0.0
    )
    free = logistic_regression(train, ctx, global_model, epochs=100, learning_rate=0.5)
    prox = logistic_regression(train, ctx, global_model, epochs=100, learning_rate=0.5, mu=1.0)
    assert np.linalg.norm(prox.weights) < 0.7 * np.linalg.norm(free.weights)
    assert prox.training["mu"] == 1.0 and prox.training["warm_start"] is True
    # A federated step's first round has no global model: the proximal term then anchors
    # to the shared zero start, exactly as a zero global model does.
    first = logistic_regression(train, ctx, epochs=100, learning_rate=0.5, mu=1.0)
    assert np.allclose(first.weights, prox.weights)


def test_warm_start_uses_the_global_models_feature_order(ctx: Recorder) -> None:
    train = pd.DataFrame({"b": [1.0, -1.0], "a": [0.5, 0.0], "target": [1, 0]})
    g = LogisticRegressionModel(["a", "b"], [0.2, -0.4], 0.1)
    model = logistic_regression(train, ctx, g, epochs=1, learning_rate=1e-9)
    assert model.features == ["a", "b"]
    assert model.weights == pytest.approx([0.2, -0.4])


def test_training_refuses_bad_labels_and_missing_values(ctx: Recorder) -> None:
    with pytest.raises(ValueError, match="binary 0/1"):
        logistic_regression(pd.DataFrame({"x": [1.0, 2.0], "target": [1, 2]}), ctx)
    with pytest.raises(ValueError, match="impute"):
        logistic_regression(pd.DataFrame({"x": [1.0, np.nan], "target": [1, 0]}), ctx)


def test_divergence_is_an_error_not_a_nan_model(ctx: Recorder) -> None:
    train = pd.DataFrame({"x": [1e200, -1e200], "target": [1, 0]})
    with pytest.raises(ValueError, match="diverged"):
        logistic_regression(train, ctx, epochs=5, learning_rate=1e10)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_gradient_matches_finite_differences(activation: str) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(15, 4)), rng.integers(0, 2, 15).astype(float)
    f = _mlp_loss_and_grad(x, y, activation)  # type: ignore[arg-type]
    params = [rng.normal(size=(4, 5)), rng.normal(size=5), rng.normal(size=5), np.array([0.1])]
    _, grads = f(params)
    for i, p in enumerate(params):
        for j in range(p.size):
            up = [q.copy() for q in params]
            up[i].flat[j] += 1e-6
            down = [q.copy() for q in params]
            down[i].flat[j] -= 1e-6
            assert grads[i].flat[j] == pytest.approx((f(up)[0] - f(down)[0]) / 2e-6, abs=1e-6)


def test_mlp_learns_breast_cancer_and_round_trips(
    breast_cancer: Data, ctx: Recorder, tmp_path: Path
) -> None:
    train, test = breast_cancer
    model = mlp(train, ctx, hidden=8, epochs=300, seed=0)
    assert accuracy(model, test) >= 0.95
    assert len(ctx.metrics("loss")) == 300
    model.save(tmp_path / "m")
    back = MLPModel.load(tmp_path / "m")
    for a, b in zip(back.get_weights(), model.get_weights(), strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(back.predict_proba(test), model.predict_proba(test))
    again = mlp(train, Recorder(), hidden=8, epochs=300, seed=0)
    assert np.array_equal(again.w1, model.w1)  # same seed, same model


def test_mlp_warm_start_keeps_the_global_architecture(breast_cancer: Data, ctx: Recorder) -> None:
    train, _ = breast_cancer
    g = mlp(train, ctx, hidden=4, activation="relu", epochs=5)
    local = mlp(train, ctx, g, hidden=99, epochs=5, mu=0.1)
    assert local.hidden == 4 and local.activation == "relu"


def test_model_files_are_checked_on_load(tmp_path: Path) -> None:
    LogisticRegressionModel(["x"], [1.0], 0.0).save(tmp_path / "m")
    with pytest.raises(ValueError, match=r"flowfed\.mlp/1"):
        MLPModel.load(tmp_path / "m")
