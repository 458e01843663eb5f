"""Preprocessing (imputation, standardization) and the sums behind federated statistics.

Federated standardization without sharing rows: every node runs ``flowfed.column_sums``
on its own table and shares only per-column count, sum and sum of squares; these add up
across nodes (plainly, or under secure aggregation, which only ever reveals sums), and
``flowfed.combine_sums`` turns the totals into the global mean and standard deviation that
each node then passes to ``flowfed.standardize``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd

from flowfed.tools import Context, tool
from flowfed.tools.library._common import numeric_columns

Strategy = Literal["mean", "median", "most_frequent"]


def _fill_value(col: pd.Series, strategy: str, name: str) -> Any:
    present = col.dropna()
    if present.empty:
        raise ValueError(f"column {name!r} has no values to fit a {strategy} imputation on")
    if strategy == "most_frequent":
        counts = present.value_counts(sort=False)
        best = counts[counts == counts.max()].index
        # Ties go to the smallest value (scikit-learn's rule), so the result does not
        # depend on row order.
        return sorted(best)[0]
    value = present.mean() if strategy == "mean" else present.median()
    return float(value)


@tool(name="flowfed.impute", version="1.0", type="preprocessing")
def impute(
    table: pd.DataFrame,
    ctx: Context,
    *,
    strategy: Strategy = "mean",
    columns: list[str] | None = None,
    per_column: dict[str, Strategy] | None = None,
) -> pd.DataFrame:
    """Fill missing values with a statistic fitted on this table, column by column.

    ``strategy`` applies to ``columns`` (default: every column with a missing value);
    ``per_column`` overrides it for single columns. ``mean`` and ``median`` need numeric
    columns; under the default strategy a non-numeric column falls back to
    ``most_frequent`` (logged), while asking for it explicitly is an error.
    """
    per_column = dict(per_column or {})
    unknown = [c for c in [*(columns or []), *per_column] if c not in table.columns]
    if unknown:
        raise ValueError(f"the table has no column(s) {unknown}")
    chosen = (
        list(columns)
        if columns is not None
        else [str(c) for c in table.columns if table[c].isna().any()]
    )
    chosen += [c for c in per_column if c not in chosen]
    out = table.copy()
    fills: dict[str, Any] = {}
    for name in chosen:
        how = per_column.get(name, strategy)
        numeric = pd.api.types.is_numeric_dtype(table[name]) and not pd.api.types.is_bool_dtype(
            table[name]
        )
        if how != "most_frequent" and not numeric:
            if name in per_column:
                raise ValueError(f"column {name!r} is not numeric: {how} cannot impute it")
            ctx.log(f"column {name!r} is not numeric: imputing its most frequent value")
            how = "most_frequent"
        missing = int(table[name].isna().sum())
        if missing == 0:
            continue
        value = _fill_value(table[name], how, name)
        fills[name] = value
        out[name] = table[name].fillna(value)
        ctx.log(f"{name}: {missing} missing value(s) filled with {how} {value!r}")
    ctx.metric("imputed_columns", len(fills))
    return out


def _stats_from(
    stats: dict[str, Any] | None,
    mean: dict[str, float] | None,
    std: dict[str, float] | None,
) -> tuple[dict[str, float], dict[str, float]] | None:
    if stats is not None:
        if mean is not None or std is not None:
            raise ValueError("give global statistics either as the 'stats' input or as config")
        if not isinstance(stats, dict) or "mean" not in stats or "std" not in stats:
            raise ValueError(
                "the 'stats' input must be a dict with 'mean' and 'std' (combine_sums)"
            )
        return dict(stats["mean"]), dict(stats["std"])
    if (mean is None) != (std is None):
        raise ValueError("give both 'mean' and 'std', or neither (then they are computed here)")
    if mean is None or std is None:
        return None
    return dict(mean), dict(std)


@tool(name="flowfed.standardize", version="1.0", type="preprocessing")
def standardize(
    table: pd.DataFrame,
    ctx: Context,
    stats: dict[str, Any] | None = None,
    *,
    target: str | None = "target",
    columns: list[str] | None = None,
    mean: dict[str, float] | None = None,
    std: dict[str, float] | None = None,
    ddof: int = 0,
) -> pd.DataFrame:
    """Z-score the feature columns: ``(x - mean) / std``.

    The statistics come from one of: the optional ``stats`` input (the output of
    ``flowfed.combine_sums``), the ``mean`` and ``std`` config dicts (global statistics of
    a federation), or, when neither is given, this table itself (population std by
    default, ``ddof=0``). Columns
    default to every numeric column except ``target``. A column whose std is 0 is only
    centered (dividing would make it NaN), and the log says so.
    """
    cols = list(columns) if columns is not None else numeric_columns(table, target)
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"the table has no column(s) {missing}")
    given = _stats_from(stats, mean, std)
    if given is None:
        values = table[cols].astype(np.float64)
        means = {c: float(values[c].mean()) for c in cols}
        stds = {c: float(values[c].std(ddof=ddof)) for c in cols}
        ctx.log(f"standardizing {len(cols)} columns with statistics of these {len(table)} rows")
    else:
        means, stds = given
        lacking = [c for c in cols if c not in means or c not in stds]
        if lacking:
            raise ValueError(f"the given statistics have no mean/std for column(s) {lacking}")
        ctx.log(f"standardizing {len(cols)} columns with given (global) statistics")
    out = table.copy()
    for c in cols:
        s = stds[c]
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"std of column {c!r} is {s!r}; it must be a finite number >= 0")
        if s == 0:
            ctx.log(f"column {c!r} is constant (std 0): centered, not scaled", level="warning")
            s = 1.0
        out[c] = (table[c].astype(np.float64) - means[c]) / s
    return out


@tool(name="flowfed.column_sums", version="1.0", type="data-transformation")
def column_sums(
    table: pd.DataFrame,
    ctx: Context,
    *,
    target: str | None = "target",
    columns: list[str] | None = None,
    shift: dict[str, float] | None = None,
) -> dict:
    """Per-column count, sum and sum of squares: what a node shares, never its rows.

    The three are additive, so totals over nodes give the global mean and std
    (``flowfed.combine_sums``). Missing values are left out of a column's count. With
    values far from zero, ``sum_sq - sum²/n`` loses precision; a ``shift`` (the same
    rough centre on every node, e.g. a published reference mean) sums ``x - shift``
    instead and is carried along so ``combine_sums`` can add it back.
    """
    cols = list(columns) if columns is not None else numeric_columns(table, target)
    shift = dict(shift or {})
    count: dict[str, int] = {}
    total: dict[str, float] = {}
    total_sq: dict[str, float] = {}
    for c in cols:
        if c not in table.columns:
            raise ValueError(f"the table has no column {c!r}")
        v = table[c].dropna().to_numpy(dtype=np.float64) - float(shift.get(c, 0.0))
        count[c] = len(v)
        # math.fsum: exactly rounded sums, so a node's contribution does not depend on
        # its row order.
        total[c] = math.fsum(v.tolist())
        total_sq[c] = math.fsum((v * v).tolist())
    ctx.log(f"summed {len(cols)} columns over {len(table)} rows")
    return {
        "count": count,
        "sum": total,
        "sum_sq": total_sq,
        "shift": {c: float(shift.get(c, 0.0)) for c in cols},
    }


def _add_sums(parts: list[dict[str, Any]]) -> dict[str, Any]:
    first = parts[0]
    cols = list(first["count"])
    for i, p in enumerate(parts[1:], start=2):
        if list(p["count"]) != cols:
            raise ValueError(f"sums #{i} cover columns {list(p['count'])}, #1 covers {cols}")
        if p.get("shift", {}) != first.get("shift", {}):
            raise ValueError(f"sums #{i} used a different shift than #1; they cannot be added")
    return {
        "count": {c: sum(int(p["count"][c]) for p in parts) for c in cols},
        "sum": {c: math.fsum(float(p["sum"][c]) for p in parts) for c in cols},
        "sum_sq": {c: math.fsum(float(p["sum_sq"][c]) for p in parts) for c in cols},
        "shift": first.get("shift", {}),
    }


@tool(name="flowfed.combine_sums", version="1.0", type="data-transformation")
def combine_sums(
    sums: dict[str, Any] | list[dict[str, Any]], ctx: Context, *, ddof: int = 0
) -> dict:
    """Global mean and std from nodes' ``column_sums``: a list of them, or their total.

    Returns ``{"mean": {...}, "std": {...}, "count": {...}}``, which ``flowfed.standardize``
    accepts as its ``stats`` input. With ``ddof=0`` (the default) this equals the
    population mean and std of all nodes' rows pooled together.
    """
    parts = [sums] if isinstance(sums, dict) else list(sums)
    if not parts:
        raise ValueError("no sums to combine")
    total = _add_sums(parts)
    mean: dict[str, float] = {}
    std: dict[str, float] = {}
    for c, n in total["count"].items():
        if n - ddof <= 0:
            raise ValueError(f"column {c!r}: {n} value(s) are too few for ddof={ddof}")
        m = total["sum"][c] / n
        # Clamped at 0: rounding can make a constant column's variance a tiny negative.
        var = max(0.0, (total["sum_sq"][c] - n * m * m) / (n - ddof))
        mean[c] = m + float(total["shift"].get(c, 0.0))
        std[c] = math.sqrt(var)
    ctx.log(f"combined sums of {len(parts)} part(s) over {len(mean)} columns")
    return {"mean": mean, "std": std, "count": total["count"]}
