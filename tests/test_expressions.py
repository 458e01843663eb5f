"""Condition expressions are evaluated safely: a whitelist, never eval."""

from __future__ import annotations

import pytest

from flowfed.plan.expressions import Expression, ExpressionError

SCOPE = {
    "metrics": {"auc": 0.91, "loss": 0.2},
    "outputs": {"rows": [1, 2, 3]},
    "status": "success",
    "attempt": 1,
    "iteration": 2,
    "config": {"min": 0.9},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.auc >= 0.9", True),
        ("metrics.auc >= config.min and metrics.loss < 0.1", False),
        ("len(outputs.rows) == 3 or iteration > 5", True),
        ("metrics['auc'] * 100 > 90", True),
        ("not status == 'failure'", True),
        ("0.5 < metrics.loss * 2 <= 1", False),
        ("'auc' in metrics", True),
        ("max(metrics.auc, metrics.loss) == 0.91", True),
    ],
)
def test_expressions_evaluate_over_metrics_outputs_and_config(text: str, expected: bool) -> None:
    assert Expression.parse(text).evaluate(SCOPE) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('true')", "only len, min, max, abs, round may be called"),
        ("metrics.__class__", "private attribute"),
        ("open", "unknown name 'open'"),
        ("[x for x in metrics]", "is not allowed"),
        ("lambda: 1", "is not allowed"),
        ("metrics.auc >=", "invalid expression"),
    ],
)
def test_anything_beyond_the_whitelist_is_rejected_at_parse_time(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(")):
        Expression.parse(text)


def test_a_missing_metric_names_what_is_available() -> None:
    with pytest.raises(ExpressionError, match=r"'f1' is not available .* auc, loss"):
        Expression.parse("metrics.f1 > 0").evaluate(SCOPE)
