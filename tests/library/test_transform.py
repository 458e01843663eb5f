"""train_test_split: sizes, stratification, determinism."""

from __future__ import annotations

import pandas as pd
import pytest

from flowfed.tools.library.transform import Split, train_test_split
from tests.library.conftest import Recorder


def table() -> pd.DataFrame:
    return pd.DataFrame({"x": range(100), "target": [1] * 20 + [0] * 80})


def test_split_sizes_disjoint_and_complete(ctx: Recorder) -> None:
    parts = train_test_split(table(), ctx, test_fraction=0.25, seed=3)
    assert isinstance(parts, Split)
    assert (len(parts.train), len(parts.test)) == (75, 25)
    assert sorted([*parts.train.index, *parts.test.index]) == list(range(100))


def test_stratified_split_keeps_class_proportions(ctx: Recorder) -> None:
    train, test = train_test_split(table(), ctx, test_fraction=0.2, stratify="target", seed=0)
    assert test["target"].sum() == 4 and train["target"].sum() == 16  # 20 % positive in both


def test_split_is_deterministic_per_seed_and_matches_scikit_learn(ctx: Recorder) -> None:
    from sklearn.model_selection import train_test_split as sk

    a = train_test_split(table(), ctx, seed=7, stratify="target")
    b = train_test_split(table(), ctx, seed=7, stratify="target")
    c = train_test_split(table(), ctx, seed=8, stratify="target")
    assert a.test.index.tolist() == b.test.index.tolist() != c.test.index.tolist()
    _, sk_test = sk(table(), test_size=0.2, random_state=7, stratify=table()["target"])
    assert a.test.index.tolist() == sk_test.index.tolist()


def test_split_errors_are_explained(ctx: Recorder) -> None:
    with pytest.raises(ValueError, match="no such column"):
        train_test_split(table(), ctx, stratify="label")
    with pytest.raises(ValueError, match="between 0 and 1"):
        train_test_split(table(), ctx, test_fraction=1.0)
    one = pd.DataFrame({"x": [1, 2, 3], "target": [0, 0, 1]})
    with pytest.raises(ValueError, match="cannot split"):
        train_test_split(one, ctx, stratify="target")
