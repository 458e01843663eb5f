"""Data transformations: structural operations that change which rows go where."""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from flowfed.tools import Context, tool


class Split(NamedTuple):
    """The two parts of ``flowfed.train_test_split``."""

    train: pd.DataFrame
    test: pd.DataFrame


@tool(name="flowfed.train_test_split", version="1.0", type="data-transformation")
def train_test_split(
    table: pd.DataFrame,
    ctx: Context,
    *,
    test_fraction: float = 0.2,
    stratify: str | None = None,
    seed: int = 0,
    shuffle: bool = True,
) -> Split:
    """Cut the table into a training and a test part.

    ``stratify`` names a column (usually the target) whose class proportions both parts
    keep. The cut is scikit-learn's ``train_test_split(test_size=test_fraction,
    random_state=seed)``, so it selects exactly the rows the same call in a notebook
    selects. Rows keep their original index, which says where each came from.
    """
    from sklearn.model_selection import train_test_split as sk_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if stratify is not None:
        if stratify not in table.columns:
            raise ValueError(f"cannot stratify on {stratify!r}: no such column")
        if not shuffle:
            raise ValueError("a stratified split needs shuffle: true")
    try:
        train, test = sk_split(
            table,
            test_size=test_fraction,
            random_state=seed,
            shuffle=shuffle,
            stratify=table[stratify] if stratify is not None else None,
        )
    except ValueError as exc:  # e.g. a class with one row cannot be stratified
        raise ValueError(f"cannot split {len(table)} rows: {exc}") from None
    ctx.log(
        f"split {len(table)} rows into {len(train)} train / {len(test)} test"
        + (f", stratified on {stratify!r}" if stratify else "")
    )
    return Split(train, test)


@tool(name="flowfed.split_by_column", version="1.0", type="data-transformation")
def split_by_column(
    table: pd.DataFrame,
    ctx: Context,
    *,
    column: str = "split",
    train_value: str = "train",
    test_value: str = "test",
    keep_column: bool = False,
) -> Split:
    """Split a table whose ``column`` already says which rows are for training and testing.

    Use it when the split was fixed when the data was made (as the breast cancer example's
    hospitals do), so every run and every site evaluates on the same rows. A row with
    any other value in ``column`` is an error that names the value.
    """
    if column not in table.columns:
        raise ValueError(f"the table has no column {column!r} (columns: {list(table.columns)})")
    values = table[column].astype(str)
    other = sorted(set(values) - {train_value, test_value})
    if other:
        raise ValueError(
            f"column {column!r} holds {other[0]!r}; expected {train_value!r} or {test_value!r}"
        )
    drop = [] if keep_column else [column]
    train = table[values == train_value].drop(columns=drop)
    test = table[values == test_value].drop(columns=drop)
    ctx.log(f"split on {column!r}: {len(train)} train / {len(test)} test rows")
    return Split(train, test)
