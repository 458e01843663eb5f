"""Classifier metrics checked by hand: ROC AUC with ties, calibration, F1, confusion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowfed.tools.library.evaluation import (
    average_ranks,
    calibration,
    classification_metrics,
    evaluate_classifier,
    roc_auc,
)
from flowfed.tools.library.models import LogisticRegressionModel
from tests.library.conftest import Recorder


def test_average_ranks_share_ties() -> None:
    assert average_ranks(np.array([0.5, 0.1, 0.5, 0.9])).tolist() == [2.5, 1.0, 2.5, 4.0]


def test_roc_auc_by_hand() -> None:
    # Positives 0.35 and 0.8, negatives 0.1 and 0.4: of the 4 (pos, neg) pairs the
    # positive scores higher in 3 (0.35 > 0.1, 0.8 > 0.1, 0.8 > 0.4): AUC = 3/4.
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75


def test_roc_auc_counts_a_tie_as_one_half() -> None:
    # Pairs: (0.5 vs 0.5) = 1/2, (0.5 vs 0.2) = 1, (0.9 vs 0.5) = 1, (0.9 vs 0.2) = 1.
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])) == 3.5 / 4
    # All scores tied: no information, AUC 1/2.
    assert roc_auc(np.array([0, 1, 1, 0]), np.full(4, 0.3)) == 0.5


def test_roc_auc_agrees_with_scikit_learn_on_tied_data() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) * 0.5 + y * 0.3, 1)  # few distinct values: many ties
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_roc_auc_is_none_for_one_class() -> None:
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.9])) is None


def test_expected_calibration_error_by_hand() -> None:
    # Two bins. [0, 0.5): p = 0.1, 0.2 (mean 0.15), outcomes 0, 1 (rate 0.5): gap 0.35.
    # [0.5, 1]: p = 0.8, 0.9 (mean 0.85), outcomes 1, 1 (rate 1.0): gap 0.15.
    # ECE = 2/4 * 0.35 + 2/4 * 0.15 = 0.25.
    cal = calibration(np.array([0, 1, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]), bins=2)
    assert cal["ece"] == pytest.approx(0.25)
    assert [b["count"] for b in cal["reliability"]] == [2, 2]
    assert cal["reliability"][0]["mean_predicted"] == pytest.approx(0.15)
    assert cal["reliability"][1]["fraction_positive"] == 1.0


def test_perfectly_calibrated_bins_have_zero_ece_and_p_1_is_in_the_last_bin() -> None:
    y = np.array([0, 1, 0, 0, 1, 1])
    p = np.array([0.5, 0.5, 0.0, 0.0, 1.0, 1.0])
    cal = calibration(y, p, bins=4)
    assert cal["ece"] == pytest.approx(0.0)
    assert [b["count"] for b in cal["reliability"]] == [2, 0, 2, 2]
    assert cal["reliability"][1]["mean_predicted"] is None


def test_threshold_metrics_by_hand() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.7, 0.2, 0.1, 0.3])
    m = classification_metrics(y, p, threshold=0.5)
    assert m["confusion_matrix"] == {"tp": 2, "fn": 1, "fp": 1, "tn": 3}
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_no_positive_predictions_give_zero_f1_not_nan() -> None:
    m = classification_metrics(np.array([1, 0]), np.array([0.1, 0.2]))
    assert m["precision"] == 0.0 and m["f1"] == 0.0


def test_evaluate_classifier_reports_every_metric(ctx: Recorder) -> None:
    model = LogisticRegressionModel(["x"], [1.0], 0.0)
    test = pd.DataFrame({"x": [-2.0, -1.0, 0.5, 3.0, -0.2], "target": [0, 0, 1, 1, 1]})
    result = evaluate_classifier(model, test, ctx, bins=5)
    assert result["rows"] == 5 and result["roc_auc"] == 1.0
    assert result["confusion_matrix"] == {"tn": 2, "fp": 0, "fn": 1, "tp": 2}
    reported = {p["name"] for k, p in ctx.events if k == "metric"}
    assert reported == {
        "accuracy",
        "roc_auc",
        "precision",
        "recall",
        "f1",
        "brier",
        "log_loss",
        "ece",
        "tp",
        "fp",
        "tn",
        "fn",
    }
    assert ctx.metrics("accuracy") == [0.8]


def test_evaluate_one_class_test_set_has_no_auc(ctx: Recorder) -> None:
    model = LogisticRegressionModel(["x"], [1.0], 0.0)
    result = evaluate_classifier(model, pd.DataFrame({"x": [1.0, 2.0], "target": [1, 1]}), ctx)
    assert result["roc_auc"] is None and ctx.metrics("roc_auc") == []
    assert result["accuracy"] == 1.0


def test_evaluate_needs_predict_proba(ctx: Recorder) -> None:
    with pytest.raises(TypeError, match="predict_proba"):
        evaluate_classifier(object(), pd.DataFrame({"target": [0]}), ctx)
