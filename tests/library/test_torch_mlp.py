"""flowfed.torch_mlp: the MLP trained with PyTorch, interchangeable with flowfed.mlp."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowfed.tools.library.models import MLPModel, mlp
from flowfed.tools.library.torch_models import torch_mlp
from tests.library.conftest import Recorder

Data = tuple[pd.DataFrame, pd.DataFrame]


def test_sgd_matches_the_numpy_trainer_step_for_step(breast_cancer: Data, ctx: Recorder) -> None:
    train, _ = breast_cancer
    numpy_model = mlp(train, ctx, hidden=8, epochs=30, learning_rate=0.3, mu=0.0, seed=1)
    torch_model = torch_mlp(train, ctx, hidden=8, epochs=30, learning_rate=0.3, seed=1)
    assert isinstance(torch_model, MLPModel)
    for a, b in zip(numpy_model.get_weights(), torch_model.get_weights(), strict=True):
        assert np.allclose(a, b, atol=1e-8)
    assert torch_model.training["framework"].startswith("torch ")


def test_adam_learns_and_fedprox_pulls_towards_the_global_model(
    breast_cancer: Data, ctx: Recorder
) -> None:
    train, test = breast_cancer
    model = torch_mlp(train, ctx, hidden=8, epochs=100, learning_rate=0.01, optimizer="adam")
    accuracy = float(np.mean(model.predict(test) == test["target"].to_numpy()))
    assert accuracy > 0.9
    start = torch_mlp(train, ctx, hidden=8, epochs=1, learning_rate=0.01)
    free = torch_mlp(train, ctx, start, epochs=100, learning_rate=0.3)
    prox = torch_mlp(train, ctx, start, epochs=100, learning_rate=0.3, mu=5.0)

    def dist(m: MLPModel) -> float:
        return sum(float(np.sum((a - b) ** 2)) for a, b in zip(
            m.get_weights(), start.get_weights(), strict=True))  # fmt: skip

    assert dist(prox) < dist(free)
