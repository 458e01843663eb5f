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


#: Score-histogram resolution of ``evaluate_classifier``. Scores are binned on the scale
#: ``t = asinh(logit(p))`` (monotone, so ranks are kept): fine where a probability scale
#: would tie every confident prediction (0.9999 and 0.999999 are logits 9.2 and 13.8),
#: finite for any logit. ``HISTOGRAM_BINS`` equal bins span ``t`` in ±``SCORE_RANGE``
#: (logits up to ±1.6e6); the two ends take anything beyond.
HISTOGRAM_BINS = 6000
SCORE_RANGE = 15.0
#: The name of that scale, stored with each histogram so sites pool like with like.
SCORE_SCALE = "asinh_logit"


def score_scale(proba: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
    """Scores on the histogram's scale, ``asinh(logit)``; from ``logits`` when the model
    gives them (no float saturation at p = 1), else from the probabilities.

    >>> score_scale(np.array([0.5, 0.9999, 0.999999])).round(2).tolist()
    [0.0, 2.92, 3.32]
    """
    if logits is None:
        p = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
        with np.errstate(divide="ignore"):
            logits = np.log(p) - np.log1p(-p)
    z = np.nan_to_num(np.asarray(logits, dtype=np.float64), posinf=1e300, neginf=-1e300)
    return np.clip(np.arcsinh(z), -SCORE_RANGE, SCORE_RANGE)


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
    # Per-class counts of the scores over score ranges: what a node may share so that the
    # pooled ROC AUC over every node's test rows can be computed (flowfed.pool_metrics)
    # without any row, label or score leaving the node. Fine bins are merged until every
    # class count is 0 or at least k (the node's disclosure minimum, 5 by default), so no
    # range singles out fewer than k patients; the reliability table likewise.
    k = min_rows_of(ctx)
    logits = None
    decide = getattr(model, "decision_function", None)
    if callable(decide):
        logits = np.asarray(decide(test), dtype=np.float64).reshape(-1)
        if logits.shape != proba.shape:
            logits = None
    t = score_scale(proba, logits)
    edges = np.linspace(-SCORE_RANGE, SCORE_RANGE, HISTOGRAM_BINS + 1)
    pos = merge_histogram(np.histogram(t[y == 1], bins=edges)[0].tolist(), edges.tolist(), k)
    neg = merge_histogram(np.histogram(t[y == 0], bins=edges)[0].tolist(), edges.tolist(), k)
    safe = pos is not None and neg is not None
    result["score_histogram"] = (
        {"k": k, "scale": SCORE_SCALE, "positive": pos, "negative": neg} if safe else None
    )
    if not safe:
        ctx.log(
            f"a class has fewer than {k} test rows: no score histogram is shared "
            "(the pooled ROC AUC leaves this site out)",
            level="warning",
        )
    result["calibration"]["reliability"] = merge_reliability(
        result["calibration"]["reliability"], k
    )
    auc = result["roc_auc"]
    ctx.log(
        f"{result['rows']} rows: accuracy {result['accuracy']:.4f}, "
        f"ROC AUC {'n/a' if auc is None else f'{auc:.4f}'}, F1 {result['f1']:.4f}, "
        f"ECE {result['ece']:.4f}"
    )
    return result


def min_rows_of(ctx: Context | None) -> int:
    """The disclosure minimum ``k`` of the node a tool runs on (5 elsewhere)."""
    dataset = getattr(ctx, "dataset", None) or {}
    got = (dataset.get("disclosure") or {}).get("min_rows") if isinstance(dataset, dict) else None
    return int(got) if isinstance(got, int) and got >= 1 else 5


def merge_histogram(counts: list[int], edges: list[float], k: int) -> list[dict[str, Any]] | None:
    """One class's score histogram with adjacent bins merged until each holds ``k`` rows.

    Returns ``[{"lo", "hi", "count"}, ...]`` in ascending score order, each range tight
    around the fine bins it holds rows in; ``[]`` for no rows, and None for fewer than
    ``k`` rows in all (no merge can hide them).

    >>> merge_histogram([1, 0, 4, 1], [0, .25, .5, .75, 1], 5)
    [{'lo': 0, 'hi': 1, 'count': 6}]
    >>> merge_histogram([5, 0, 6, 4], [0, .25, .5, .75, 1], 5)
    [{'lo': 0, 'hi': 0.25, 'count': 5}, {'lo': 0.5, 'hi': 1, 'count': 10}]
    >>> merge_histogram([2, 0], [0, .5, 1], 5) is None
    True
    """
    total = sum(int(c) for c in counts)
    if total == 0:
        return []
    if total < k:
        return None
    segments: list[dict[str, Any]] = []
    lo: float | None = None
    hi = edges[0]
    n = 0
    for i, c in enumerate(counts):
        if not c:
            continue
        if lo is None:
            lo = edges[i]
        hi, n = edges[i + 1], n + int(c)
        if n >= k:
            segments.append({"lo": lo, "hi": hi, "count": n})
            lo, n = None, 0
    if n:  # a short tail joins the last segment
        last = segments[-1]
        last.update(hi=hi, count=last["count"] + n)
    return segments


def merge_reliability(table: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """A reliability table with adjacent bins merged until each holds at least ``k`` rows.

    Means are merged by their counts; a table of fewer than ``k`` rows becomes one bin.

    >>> t = [{"lower": 0, "upper": .5, "count": 2, "mean_predicted": .2, "fraction_positive": 0},
    ...      {"lower": .5, "upper": 1, "count": 4, "mean_predicted": .8, "fraction_positive": 1}]
    >>> merge_reliability(t, 5)[0]["count"], round(merge_reliability(t, 5)[0]["mean_predicted"], 2)
    (6, 0.6)
    """
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for row in table:
        if cur is None:
            cur = {"lower": row["lower"], "upper": row["upper"], "count": 0, "sp": 0.0, "sy": 0.0}
        c = int(row["count"])
        cur["upper"] = row["upper"]
        cur["count"] += c
        if c:
            cur["sp"] += c * float(row["mean_predicted"])
            cur["sy"] += c * float(row["fraction_positive"])
        if cur["count"] >= k:
            out.append(cur)
            cur = None
    if cur is not None and cur["count"]:
        if out:
            last = out[-1]
            last.update(
                upper=cur["upper"],
                count=last["count"] + cur["count"],
                sp=last["sp"] + cur["sp"],
                sy=last["sy"] + cur["sy"],
            )
        else:
            out.append(cur)
    elif cur is not None and out:
        out[-1]["upper"] = cur["upper"]
    return [
        {
            "lower": r["lower"],
            "upper": r["upper"],
            "count": r["count"],
            "mean_predicted": r["sp"] / r["count"] if r["count"] else None,
            "fraction_positive": r["sy"] / r["count"] if r["count"] else None,
        }
        for r in out
    ]


def auc_from_segments(
    positive: list[dict[str, Any]], negative: list[dict[str, Any]]
) -> tuple[float, float, float] | None:
    """Pooled ROC AUC from the merged score histograms of every site, with its bounds.

    ``positive`` and ``negative`` hold every site's ranges (``lo``, ``hi``, ``count``) of
    that class. A positive range wholly above a negative one wins, wholly below loses;
    for ranges that overlap, the estimate takes scores spread evenly over each range, and
    the bounds count them all lost (lower) or all won (upper): the exact AUC lies within.
    Returns ``(auc, lower, upper)``, or None without both classes.

    >>> auc_from_segments([{"lo": .5, "hi": 1, "count": 5}], [{"lo": 0, "hi": .5, "count": 5}])
    (1.0, 1.0, 1.0)
    """
    n_pos = sum(int(s["count"]) for s in positive)
    n_neg = sum(int(s["count"]) for s in negative)
    if n_pos == 0 or n_neg == 0:
        return None
    wins = unsure = guess = 0.0
    for p in positive:
        for q in negative:
            pairs = float(p["count"]) * float(q["count"])
            if p["lo"] >= q["hi"]:
                wins += pairs
            elif p["hi"] > q["lo"]:
                unsure += pairs
                guess += pairs * _p_above(p["lo"], p["hi"], q["lo"], q["hi"])
    total = float(n_pos * n_neg)
    return (wins + guess) / total, wins / total, (wins + unsure) / total


def _p_above(a: float, b: float, c: float, d: float) -> float:
    """P(X > Y) for X uniform on [a, b] and Y uniform on [c, d] (ties count one half)."""
    xs = a + (b - a) * (np.arange(256) + 0.5) / 256
    if d > c:
        below = np.clip((xs - c) / (d - c), 0.0, 1.0)
    else:
        below = np.where(xs > c, 1.0, np.where(xs == c, 0.5, 0.0))
    return float(below.mean())


def _to_scale(r: dict[str, Any]) -> dict[str, Any]:
    """A probability range ``{lo, hi, count}`` on the asinh-logit scale."""
    lo, hi = score_scale(np.array([float(r["lo"]), float(r["hi"])]))
    return {"lo": float(lo), "hi": float(hi), "count": r["count"]}


def auc_from_histograms(positive: list[int], negative: list[int]) -> float | None:
    """ROC AUC from per-class score counts over the same ascending bins (ties count ½).

    >>> auc_from_histograms([0, 1, 3], [2, 1, 0])
    0.9583333333333334
    """
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    if pos.shape != neg.shape:
        raise ValueError("the two histograms must have the same bins")
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])  # negatives in lower bins
    wins = float(np.sum(pos * (below + 0.5 * neg)))
    return wins / float(n_pos * n_neg)


@tool(name="flowfed.pool_metrics", version="1.0", type="evaluation")
def pool_metrics(
    scores: list[dict],
    ctx: Context,
    reference: dict | None = None,
    *,
    sites: list[str] | None = None,
) -> dict:
    """Per-site and pooled accuracy and ROC AUC from each site's ``evaluate_classifier``.

    ``scores`` is the fan-in of a step placed on each dataset (in ``config.datasets``
    order; ``sites`` names them, usually ``${config.datasets}``). Pooled accuracy adds
    the confusion counts; pooled ROC AUC adds the sites' score histograms, so no row,
    label or score leaves a site. ``reference`` (optional) is an evaluation of a
    centralized model on the same test rows, reported beside the federated one with the
    accuracy gap. Returns ``{"sites": {...}, "pooled": {...}, "centralized": {...},
    "gap": {...}}`` and reports ``pooled_accuracy`` / ``pooled_roc_auc`` as metrics.
    """
    if not scores:
        raise ValueError("no site evaluations to pool")
    names = list(sites) if sites is not None else [f"site-{i + 1}" for i in range(len(scores))]
    if len(names) != len(scores):
        raise ValueError(f"{len(names)} site names for {len(scores)} evaluations")
    per_site: dict[str, Any] = {}
    cm: dict[str, int] | None = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    pos_ranges: list[dict[str, Any]] = []
    neg_ranges: list[dict[str, Any]] = []
    left_out: list[str] = []
    rows = 0
    correct = 0.0
    for name, s in zip(names, scores, strict=True):
        site_cm = s.get("confusion_matrix") or {}
        if cm is not None and all(isinstance(site_cm.get(key), int) for key in cm):
            for key in cm:
                cm[key] += int(site_cm[key])
        else:
            cm = None  # a node suppressed a cell below its k: no pooled table
        # accuracy x rows is the site's count of correct predictions, exactly
        rows += int(s["rows"])
        correct += float(s["accuracy"]) * int(s["rows"])
        per_site[name] = {
            "rows": s["rows"],
            "accuracy": s["accuracy"],
            "roc_auc": s["roc_auc"],
            "f1": s["f1"],
        }
        hist = s.get("score_histogram")
        if hist is None:
            left_out.append(name)
        elif "bins" not in hist:
            # ranges of probabilities (evaluations made before the asinh-logit scale) are
            # mapped onto it: the map is monotone, so what is above stays above
            on_scale = hist.get("scale") == SCORE_SCALE
            for got, ranges in ((hist["positive"], pos_ranges), (hist["negative"], neg_ranges)):
                ranges += [r if on_scale else _to_scale(r) for r in got]
        else:  # fixed equal bins (an evaluation made before k-merged histograms)
            e = np.linspace(0.0, 1.0, int(hist["bins"]) + 1)
            for counts, ranges in ((hist["positive"], pos_ranges), (hist["negative"], neg_ranges)):
                ranges += [
                    _to_scale({"lo": e[i], "hi": e[i + 1], "count": c})
                    for i, c in enumerate(counts)
                    if c
                ]
    accuracy = round(correct) / rows
    bounds = auc_from_segments(pos_ranges, neg_ranges)
    auc = None if bounds is None else bounds[0]
    pooled: dict[str, Any] = {
        "rows": rows,
        "accuracy": accuracy,
        "roc_auc": auc,
        "roc_auc_bounds": None if bounds is None else [bounds[1], bounds[2]],
        "roc_auc_left_out": left_out,
        "f1": None if cm is None else _ratio(2 * cm["tp"], 2 * cm["tp"] + cm["fp"] + cm["fn"]),
        "confusion_matrix": cm,
    }
    out: dict[str, Any] = {"sites": per_site, "pooled": pooled}
    ctx.metric("pooled_accuracy", accuracy)
    if auc is not None:
        ctx.metric("pooled_roc_auc", auc)
    if reference is not None:
        out["centralized"] = {
            k: reference.get(k) for k in ("rows", "accuracy", "roc_auc", "f1") if k in reference
        }
        out["gap"] = {"accuracy": accuracy - float(reference["accuracy"])}
        ctx.metric("centralized_accuracy", float(reference["accuracy"]))
    ctx.log(
        f"pooled over {len(scores)} site(s), {rows} rows: accuracy {accuracy:.4f}"
        + (f", ROC AUC {auc:.4f}" if auc is not None else "")
    )
    return out
