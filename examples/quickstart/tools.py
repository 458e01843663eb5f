"""Tools for the quick-start flow: load → standardize → split → train → evaluate → report.

Each function is ordinary Python; flowfed reads its role from ``type=``, its inputs from
its positional parameters, its config from its keyword-only parameters and its outputs
from its return annotation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from flowfed import Context, Model, tool


@tool(version="1.0", type="database-adapter")
def synthetic_patients(ctx: Context, *, rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """Generate a reproducible table of patient measurements with a binary diagnosis."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, rows)
    radius = rng.normal(12 + 4 * label, 2.0)
    texture = rng.normal(18 + 3 * label, 3.0)
    smoothness = rng.normal(0.09 + 0.01 * label, 0.012)
    ctx.log(f"generated {rows} rows with seed {seed}")
    return pd.DataFrame(
        {"radius": radius, "texture": texture, "smoothness": smoothness, "diagnosis": label}
    )


@tool(version="1.0", type="preprocessing")
def standardize(table: pd.DataFrame, ctx: Context, *, target: str = "diagnosis") -> pd.DataFrame:
    """Scale every feature column to zero mean and unit variance."""
    features = table.drop(columns=[target])
    scaled = (features - features.mean()) / features.std(ddof=0)
    scaled[target] = table[target].to_numpy()
    ctx.log(f"standardized {features.shape[1]} features")
    return scaled


class Split(NamedTuple):
    train: pd.DataFrame
    test: pd.DataFrame


@tool(version="1.0", type="data-transformation")
def split(table: pd.DataFrame, *, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """Shuffle and cut the table into a training part and a test part."""
    shuffled = table.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    cut = int(len(shuffled) * (1 - test_fraction))
    return Split(shuffled.iloc[:cut], shuffled.iloc[cut:])


class LogisticModel(Model):
    """A logistic regression's weights, saved as JSON (readable, no pickle)."""

    def __init__(self, weights: list[float], bias: float, features: list[str]) -> None:
        self.weights = weights
        self.bias = bias
        self.features = features

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        z = table[self.features].to_numpy() @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, path: str | Path) -> LogisticModel:
        return cls(**json.loads(Path(path).read_text()))


@tool(version="1.0", type="analysis")
def train_logreg(
    train: pd.DataFrame,
    ctx: Context,
    *,
    target: str = "diagnosis",
    epochs: int = 200,
    learning_rate: float = 0.1,
) -> LogisticModel:
    """Fit a logistic regression by full-batch gradient descent, reporting the loss."""
    features = [c for c in train.columns if c != target]
    x = train[features].to_numpy()
    y = train[target].to_numpy()
    w = np.zeros(x.shape[1])
    b = 0.0
    for epoch in range(1, epochs + 1):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        w -= learning_rate * x.T @ (p - y) / len(y)
        b -= learning_rate * float(np.mean(p - y))
        if epoch % 20 == 0 or epoch == epochs:
            eps = 1e-12
            loss = -float(np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
            ctx.metric("loss", loss, step=epoch)
            ctx.progress(epoch, epochs, f"epoch {epoch}/{epochs}")
    return LogisticModel(w.tolist(), b, features)


@tool(version="1.0", type="evaluation")
def evaluate(model: LogisticModel, test: pd.DataFrame, ctx: Context, *,
             target: str = "diagnosis") -> dict:  # fmt: skip
    """Accuracy and ROC AUC of the model on held-out rows."""
    proba = model.predict_proba(test)
    y = test[target].to_numpy()
    accuracy = float(np.mean((proba >= 0.5) == y))
    order = np.argsort(proba)
    ranks = np.empty(len(proba))
    ranks[order] = np.arange(1, len(proba) + 1)
    pos = y == 1
    auc = float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))
    ctx.metric("accuracy", accuracy)
    ctx.metric("auc", auc)
    return {"accuracy": accuracy, "auc": auc, "rows": len(y)}


@tool(version="1.0", type="evaluation")
def report(scores: dict, ctx: Context, *, title: str = "Model report") -> str:
    """A short human-readable summary of the evaluation."""
    text = f"{title}: accuracy {scores['accuracy']:.3f}, ROC AUC {scores['auc']:.3f}"
    ctx.log(text)
    return text
