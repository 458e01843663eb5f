"""Fixtures for the built-in tools' tests: a recording context and standardized data."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import flowfed.tools.library  # noqa: F401  (registers the built-ins)
from flowfed import Context


class Recorder(Context):
    """A context that keeps every event, for assertions on logs, metrics and progress."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        super().__init__(lambda kind, payload: self.events.append((kind, payload)))

    def metrics(self, name: str) -> list[float]:
        return [p["value"] for k, p in self.events if k == "metric" and p["name"] == name]

    def logs(self) -> list[str]:
        return [p["message"] for k, p in self.events if k == "log"]


@pytest.fixture
def ctx() -> Recorder:
    return Recorder()


@pytest.fixture(scope="session")
def breast_cancer() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Breast cancer train/test (stratified 80/20, seed 0), standardized on train stats."""
    from flowfed.tools.library.adapters import sklearn_dataset
    from flowfed.tools.library.preprocessing import standardize
    from flowfed.tools.library.transform import train_test_split

    raw = sklearn_dataset(Context(), name="breast_cancer")
    train, test = train_test_split(raw, Context(), stratify="target", seed=0)
    mean = {c: float(train[c].mean()) for c in train.columns if c != "target"}
    std = {c: float(train[c].std(ddof=0)) for c in train.columns if c != "target"}
    return (
        standardize(train, Context(), mean=mean, std=std),
        standardize(test, Context(), mean=mean, std=std),
    )
