"""Imputation, standardization and the sums behind federated standardization."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowfed.tools.library.preprocessing import column_sums, combine_sums, impute, standardize
from tests.library.conftest import Recorder


def test_impute_per_column_strategies_fitted_on_the_input(ctx: Recorder) -> None:
    table = pd.DataFrame(
        {
            "age": [10.0, np.nan, 30.0, 80.0],  # mean of 10, 30, 80 = 40
            "bmi": [20.0, 22.0, np.nan, 100.0],  # median of 20, 22, 100 = 22
            "site": ["a", "b", "b", None],  # most frequent: b
            "code": [3.0, 1.0, np.nan, 3.0],
        }
    )
    out = impute(table, ctx, per_column={"bmi": "median", "code": "most_frequent"})
    assert out["age"].tolist() == [10.0, 40.0, 30.0, 80.0]
    assert out["bmi"].tolist() == [20.0, 22.0, 22.0, 100.0]
    assert out["site"].tolist() == ["a", "b", "b", "b"]  # non-numeric: falls back, logged
    assert out["code"].tolist() == [3.0, 1.0, 3.0, 3.0]
    assert any("site" in line and "most frequent" in line for line in ctx.logs())
    assert table["age"].isna().sum() == 1  # the input is not modified
    assert ctx.metrics("imputed_columns") == [4.0]


def test_impute_most_frequent_ties_go_to_the_smallest_value(ctx: Recorder) -> None:
    table = pd.DataFrame({"x": [2.0, 1.0, 2.0, 1.0, np.nan]})
    assert impute(table, ctx, strategy="most_frequent")["x"].iloc[-1] == 1.0


def test_impute_refuses_mean_of_text_and_empty_columns(ctx: Recorder) -> None:
    with pytest.raises(ValueError, match="not numeric"):
        impute(pd.DataFrame({"s": ["a", None]}), ctx, per_column={"s": "mean"})
    with pytest.raises(ValueError, match="no values"):
        impute(pd.DataFrame({"x": [np.nan, np.nan]}), ctx)


def test_standardize_locally_gives_zero_mean_unit_std(ctx: Recorder) -> None:
    table = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "target": [0, 1, 0, 1]})
    out = standardize(table, ctx)
    # mean 2.5, population std sqrt(1.25)
    assert np.allclose(out["x"], (np.array([1, 2, 3, 4]) - 2.5) / np.sqrt(1.25))
    assert out["target"].tolist() == [0, 1, 0, 1]  # the target is never scaled


def test_standardize_with_given_statistics(ctx: Recorder) -> None:
    table = pd.DataFrame({"x": [0.0, 10.0], "y": [5.0, 7.0], "target": [0, 1]})
    out = standardize(table, ctx, mean={"x": 5.0, "y": 6.0}, std={"x": 2.5, "y": 0.5})
    assert out["x"].tolist() == [-2.0, 2.0]
    assert out["y"].tolist() == [-2.0, 2.0]
    same = standardize(table, ctx, {"mean": {"x": 5.0, "y": 6.0}, "std": {"x": 2.5, "y": 0.5}})
    pd.testing.assert_frame_equal(out, same)


def test_standardize_statistics_must_cover_every_column(ctx: Recorder) -> None:
    table = pd.DataFrame({"x": [0.0, 1.0], "y": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"\['y'\]"):
        standardize(table, ctx, target=None, mean={"x": 0.0}, std={"x": 1.0})
    with pytest.raises(ValueError, match="both"):
        standardize(table, ctx, mean={"x": 0.0})


def test_standardize_constant_column_is_centered_not_nan(ctx: Recorder) -> None:
    out = standardize(pd.DataFrame({"x": [3.0, 3.0]}), ctx, target=None)
    assert out["x"].tolist() == [0.0, 0.0]
    assert any("constant" in line for line in ctx.logs())


def test_column_sums_by_hand(ctx: Recorder) -> None:
    table = pd.DataFrame({"x": [1.0, 2.0, np.nan], "target": [0, 1, 1]})
    assert column_sums(table, ctx) == {
        "count": {"x": 2},
        "sum": {"x": 3.0},
        "sum_sq": {"x": 5.0},
        "shift": {"x": 0.0},
    }


def test_combined_sums_equal_the_pooled_mean_and_std(ctx: Recorder) -> None:
    rng = np.random.default_rng(1)
    nodes = [
        pd.DataFrame({"a": rng.normal(5, 2, n), "b": rng.exponential(3, n), "target": 0})
        for n in (17, 40, 3)
    ]
    pooled = pd.concat(nodes)
    stats = combine_sums([column_sums(t, ctx) for t in nodes], ctx)
    for c in ("a", "b"):
        assert stats["mean"][c] == pytest.approx(pooled[c].mean(), rel=1e-12)
        assert stats["std"][c] == pytest.approx(pooled[c].std(ddof=0), rel=1e-12)
        assert stats["count"][c] == 60
    sample = combine_sums([column_sums(t, ctx) for t in nodes], ctx, ddof=1)
    assert sample["std"]["a"] == pytest.approx(pooled["a"].std(ddof=1), rel=1e-12)
    # Standardizing every node with the global statistics equals standardizing the pool.
    scaled = pd.concat([standardize(t, ctx, stats) for t in nodes])
    assert np.allclose(scaled[["a", "b"]], standardize(pooled, ctx)[["a", "b"]])


def test_combine_sums_accepts_an_already_summed_total(ctx: Recorder) -> None:
    # Secure aggregation reveals only the element-wise total of the nodes' sums.
    parts = [column_sums(pd.DataFrame({"x": v}), ctx, target=None) for v in ([1.0, 3.0], [5.0])]
    total = {
        "count": {"x": 3},
        "sum": {"x": 9.0},
        "sum_sq": {"x": 35.0},
        "shift": {"x": 0.0},
    }
    assert combine_sums(total, ctx) == combine_sums(parts, ctx)
    assert combine_sums(total, ctx)["mean"] == {"x": 3.0}
    assert combine_sums(total, ctx)["std"]["x"] == pytest.approx(np.sqrt(8 / 3))


def test_shift_keeps_precision_far_from_zero(ctx: Recorder) -> None:
    values = 1e9 + np.array([0.1, 0.2, 0.3, 0.4])
    table = pd.DataFrame({"x": values})
    shifted = combine_sums(column_sums(table, ctx, target=None, shift={"x": 1e9}), ctx)
    assert shifted["std"]["x"] == pytest.approx(np.std(values - 1e9), rel=1e-6)
    assert shifted["mean"]["x"] == pytest.approx(1e9 + 0.25)
    with pytest.raises(ValueError, match="different shift"):
        combine_sums(
            [
                column_sums(table, ctx, target=None, shift={"x": 1e9}),
                column_sums(table, ctx, target=None),
            ],
            ctx,
        )
