"""Issue 21, defect 4: the pooled ROC AUC of confident models, against scikit-learn.

Each site releases only its k-merged score ranges (every range holds at least k rows of
one class); the pooled estimate must contain scikit-learn's exact AUC on the pooled rows
within its reported bounds and sit close to it, also when predictions saturate (p = 1 in
float64), with a poisoned model and with a DP-noised one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from flowfed.tools.library.evaluation import evaluate_classifier, pool_metrics
from flowfed.tools.library.models import LogisticRegressionModel, logistic_regression
from tests.library.conftest import Recorder


@pytest.fixture(scope="module")
def fitted(breast_cancer: tuple[pd.DataFrame, pd.DataFrame]) -> LogisticRegressionModel:
    train, _ = breast_cancer
    return logistic_regression(train, Recorder(), epochs=300, learning_rate=0.5)


def _variant(model: LogisticRegressionModel, case: str) -> LogisticRegressionModel:
    w = model.get_weights()
    rng = np.random.default_rng(7)
    if case == "confident":  # logits in the hundreds: most probabilities are exactly 0 or 1
        return model.with_weights([x * 40 for x in w])
    if case == "poisoned":  # a third of the update pulled the wrong way, then boosted
        return model.with_weights([x * 12 - 4 * np.abs(x) * (rng.random(x.shape) < 0.3) for x in w])
    # "dp": Gaussian noise on every weight, as a DP model carries
    return model.with_weights([x * 8 + rng.normal(0, 2.0, x.shape) for x in w])


@pytest.mark.parametrize("case", ["confident", "poisoned", "dp"])
def test_pooled_auc_matches_scikit_learn(
    fitted: LogisticRegressionModel, breast_cancer: tuple[pd.DataFrame, pd.DataFrame], case: str
) -> None:
    _, test = breast_cancer
    model = _variant(fitted, case)
    sites = [test.iloc[i::3] for i in range(3)]
    scores = [evaluate_classifier(model, site, Recorder()) for site in sites]
    for s in scores:  # what left each site is k-safe
        hist = s["score_histogram"]
        assert hist is not None and hist["k"] == 5
        for ranges in (hist["positive"], hist["negative"]):
            assert all(r["count"] >= 5 for r in ranges), ranges
        assert len(hist["positive"]) + len(hist["negative"]) <= s["rows"] / 5
    pooled = pool_metrics(scores, Recorder())["pooled"]
    y = np.concatenate([site["target"].to_numpy() for site in sites])
    logits = np.concatenate([model.decision_function(site) for site in sites])
    exact = roc_auc_score(y, logits)
    low, high = pooled["roc_auc_bounds"]
    assert low - 1e-12 <= exact <= high + 1e-12, (low, exact, high)
    assert abs(pooled["roc_auc"] - exact) < 0.01, (case, pooled["roc_auc"], exact)
    if case == "confident":
        # the probabilities tie where the logits do not: a probability-binned pooling
        # could not tell these rows apart
        proba = np.concatenate([model.predict_proba(site) for site in sites])
        assert len(np.unique(proba)) < len(np.unique(logits))
