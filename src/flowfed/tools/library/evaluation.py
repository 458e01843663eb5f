"""Evaluation: metrics of a binary classifier on held-out rows; nothing is changed.

The metric functions are plain numpy and usable on their own; ``flowfed.evaluate_classifier``
wraps them as a tool.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from flowfed.tools import Context, Model, tool
from flowfed.tools.library._common import binary_labels


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Tie groups in sorted order: group g spans sorted positions starts[g] .. ends[g] - 1,
    # i.e. ranks starts[g] + 1 .. ends[g], whose mean is (starts[g] + 1 + ends[g]) / 2.
    new_group = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], n]
    group = np.cumsum(new_group) - 1
    ranks = np.empty(n)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]
    return ranks


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve by ranks (Mann-Whitney U); a tie counts one half.

    It is the probability that a random positive scores above a random negative. None
    when ``y`` holds one class only (the area is undefined then).
    """
    y = np.asarray(y)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = float(average_ranks(scores)[pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def confusion(y: np.ndarray, predicted: np.ndarray) -> dict[str, int]:
    """Counts of true/false positives/negatives."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(predicted).astype(bool)
    return {
        "tn": int((~y & ~p).sum()),
        "fp": int((~y & p).sum()),
        "fn": int((y & ~p).sum()),
        "tp": int((y & p).sum()),
    }


def calibration(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Expected calibration error and the reliability table, in ``bins`` equal-width bins.

    For binary outcomes, the ECE of Naeini et al. (2015): rows fall into bin
    ``min(floor(p * bins), bins - 1)`` by their predicted probability ``p`` of class 1;
    ``ECE = sum_b (n_b / n) * |mean(y in b) - mean(p in b)|``. Empty bins count nothing.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(proba, dtype=np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    ece = 0.0
    table = []
    for b in range(bins):
        in_bin = which == b
        count = int(in_bin.sum())
        row: dict[str, Any] = {"lower": b / bins, "upper": (b + 1) / bins, "count": count}
        if count:
            mean_p = float(p[in_bin].mean())
            frac = float(y[in_bin].mean())
            ece += count / len(y) * abs(frac - mean_p)
            row.update(mean_predicted=mean_p, fraction_positive=frac)
        else:
            row.update(mean_predicted=None, fraction_positive=None)
        table.append(row)
    return {"ece": ece, "bins": bins, "reliability": table}


def _ratio(num: int, den: int) -> float:
    # 0/0 is reported as 0.0 (scikit-learn's zero_division default), not NaN, so that
    # conditions on these metrics stay plain comparisons.
    return num / den if den else 0.0


def classification_metrics(
    y: np.ndarray, proba: np.ndarray, *, threshold: float = 0.5, bins: int = 10
) -> dict[str, Any]:
    """Every metric ``flowfed.evaluate_classifier`` returns, from labels and P(class 1)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(proba, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must be equal 1-d")
    if len(y) == 0:
        raise ValueError("no rows to evaluate")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("predicted probabilities must be finite and within [0, 1]")
    cm = confusion(y, p >= threshold)
    precision = _ratio(cm["tp"], cm["tp"] + cm["fp"])
    recall = _ratio(cm["tp"], cm["tp"] + cm["fn"])
    eps = 1e-15  # clipping keeps the log finite for a confident wrong prediction
    pc = np.clip(p, eps, 1 - eps)
    cal = calibration(y, p, bins)
    return {
        "rows": len(y),
        "positives": int(y.sum()),
        "threshold": threshold,
        "accuracy": (cm["tp"] + cm["tn"]) / len(y),
        "roc_auc": roc_auc(y, p),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * cm["tp"], 2 * cm["tp"] + cm["fp"] + cm["fn"]),
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))),
        "confusion_matrix": cm,
        "calibration": cal,
        "ece": cal["ece"],
    }


#: The scalar metrics reported through ``ctx.metric`` (conditions can test them).
REPORTED = ("accuracy", "roc_auc", "precision", "recall", "f1", "brier", "log_loss", "ece")


@tool(name="flowfed.evaluate_classifier", version="1.0", type="evaluation")
def evaluate_classifier(
    model: Model,
    test: pd.DataFrame,
    ctx: Context,
    *,
    target: str | None = None,
    threshold: float = 0.5,
    bins: int = 10,
) -> dict:
    """Accuracy, ROC AUC, precision, recall, F1, Brier score, log loss, confusion matrix
    and calibration (ECE with its reliability table) of a binary classifier on ``test``.

    ``model`` is any model with ``predict_proba(table)`` returning ``P(class 1)`` per row
    (the built-in models do). ``target`` defaults to the model's own target column. Each
    scalar metric is also reported with ``ctx.metric`` (so ``next.when`` can test, e.g.,
    ``metrics.roc_auc >= 0.9``), as are the four confusion counts (``tp``, ``fp``,
    ``tn``, ``fn``). ROC AUC is None, and not reported, when ``test`` has one class only.
    """
    predict = getattr(model, "predict_proba", None)
    if not callable(predict):
        raise TypeError(f"{type(model).__name__} has no predict_proba(table)")
    column = target or getattr(model, "target", None) or "target"
    y = binary_labels(test, column)
    proba = np.asarray(predict(test), dtype=np.float64).reshape(-1)
    result = classification_metrics(y, proba, threshold=threshold, bins=bins)
    for name in REPORTED:
        value = result[name]
        if value is not None and math.isfinite(value):
            ctx.metric(name, value)
    for name, count in result["confusion_matrix"].items():
        ctx.metric(name, count)
    if result["roc_auc"] is None:
        ctx.log("the test rows hold one class only: ROC AUC is undefined", level="warning")
    auc = result["roc_auc"]
    ctx.log(
        f"{result['rows']} rows: accuracy {result['accuracy']:.4f}, "
        f"ROC AUC {'n/a' if auc is None else f'{auc:.4f}'}, F1 {result['f1']:.4f}, "
        f"ECE {result['ece']:.4f}"
    )
    return result
