"""A small CNN over scikit-learn's 8x8 digits, trained federated through flowfed's
PyTorch adapter (``flowfed.torch_module``), and the example's evaluation tools.

The flow names the module by import path, ``digits_cnn:SmallCNN`` (this file's folder is
importable once the flow lists it under ``imports``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from flowfed.tools import Context, tool
from flowfed.tools.library.torch_adapter import TorchModel


class SmallCNN(nn.Module):
    """conv(1→8, 3x3) → ReLU → max-pool → conv(8→16, 3x3) → ReLU → max-pool → linear(64→10).

    Inputs are the 8x8 images with pixel values 0..16, as ``(rows, 1, 8, 8)``.
    """

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(2 * channels * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x / 16.0).flatten(1))


@tool(name="digits.evaluate", version="1.0", type="evaluation")
def evaluate(model: TorchModel, test: pd.DataFrame, ctx: Context) -> dict:
    """Accuracy on this site's test rows: only the counts (correct, rows) leave."""
    predicted = model.predict(test)
    correct = int(np.sum(predicted == test["target"].to_numpy()))
    ctx.metric("accuracy", correct / len(test))
    return {"rows": len(test), "correct": correct}


@tool(name="digits.pool", version="1.0", type="evaluation")
def pool(scores: list[dict], ctx: Context) -> dict:
    """Pooled accuracy over every site's test rows, from their counts."""
    rows = sum(int(s["rows"]) for s in scores)
    correct = sum(int(s["correct"]) for s in scores)
    ctx.metric("pooled_accuracy", correct / rows)
    return {"rows": rows, "accuracy": correct / rows, "sites": len(scores)}
