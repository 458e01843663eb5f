"""Partitioning one table across simulated sites: IID, Dirichlet label skew, quantity skew.

For research flows that simulate a federation from a central dataset (the breast cancer
example's ``make_data.py`` deals its hospitals this way). Every scheme is fully
determined by its ``seed`` and gives every part at least ``min_rows`` rows, or refuses
with the largest number of parts it can honour.

- ``iid``: a random permutation cut into ``parts`` near-equal slices.
- ``dirichlet`` (label skew, Hsu et al. 2019): per class, shares of the class drawn
  from Dirichlet(alpha, …, alpha); small ``alpha`` gives very different label mixes.
- ``quantity`` (quantity skew, Li et al. 2022, "Federated Learning on Non-IID Data
  Silos"): part sizes from Dirichlet(alpha), rows otherwise random.

>>> import numpy as np
>>> y = np.array([0] * 6 + [1] * 6)
>>> parts = partition_indices(12, 3, scheme="iid", seed=0)
>>> sorted(len(p) for p in parts)
[4, 4, 4]
>>> parts = partition_indices(12, 3, scheme="dirichlet", labels=y, alpha=0.1, seed=0)
>>> sum(len(p) for p in parts), min(len(p) for p in parts) >= 1
(12, True)
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from flowfed.tools import Context, tool

Scheme = Literal["iid", "dirichlet", "quantity"]

__all__ = ["partition", "partition_indices"]


def _split_counts(n: int, shares: np.ndarray) -> np.ndarray:
    """``n`` split by ``shares``: floor, then leftovers to the largest remainders."""
    raw = n * shares / shares.sum()
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    return counts


def partition_indices(
    n: int,
    parts: int,
    *,
    scheme: Scheme = "iid",
    labels: np.ndarray | None = None,
    alpha: float = 0.5,
    seed: int = 0,
    min_rows: int = 1,
) -> list[np.ndarray]:
    """Row positions ``0..n-1`` dealt to ``parts`` parts, each sorted, each ``>= min_rows``.

    Raises ``ValueError`` naming the largest ``parts`` it can honour when
    ``parts · min_rows > n``.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if min_rows < 0:
        raise ValueError(f"min_rows must be >= 0, got {min_rows}")
    if parts * min_rows > n:
        most = n // min_rows if min_rows else parts
        raise ValueError(
            f"{n} rows cannot give {parts} parts {min_rows} row(s) each; at most {most} parts"
        )
    if scheme not in ("iid", "dirichlet", "quantity"):
        raise ValueError(f"scheme must be iid, dirichlet or quantity, got {scheme!r}")
    if scheme != "iid" and not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    rng = np.random.default_rng(seed)
    owner = np.empty(n, dtype=np.int64)
    if scheme == "dirichlet":
        if labels is None or len(labels) != n:
            raise ValueError("the dirichlet scheme needs one label per row")
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            rows = rows[rng.permutation(len(rows))]
            counts = _split_counts(len(rows), rng.dirichlet([alpha] * parts))
            owner[rows] = np.repeat(np.arange(parts), counts)
    else:
        shares = np.ones(parts) if scheme == "iid" else rng.dirichlet([alpha] * parts)
        order = rng.permutation(n)
        owner[order] = np.repeat(np.arange(parts), _split_counts(n, shares))
    # Top up parts below min_rows with rows from the largest part (random rows, seeded),
    # until every part has its minimum: possible since parts · min_rows <= n.
    sizes = np.bincount(owner, minlength=parts)
    for p in np.flatnonzero(sizes < min_rows):
        while sizes[p] < min_rows:
            donor = int(np.argmax(sizes))
            rows = np.flatnonzero(owner == donor)
            owner[rows[rng.integers(len(rows))]] = p
            sizes[donor] -= 1
            sizes[p] += 1
    return [np.flatnonzero(owner == p) for p in range(parts)]


@tool(name="flowfed.partition", version="1.0", type="data-transformation")
def partition(
    table: pd.DataFrame,
    ctx: Context,
    *,
    parts: int,
    scheme: Scheme = "iid",
    target: str = "target",
    alpha: float = 0.5,
    seed: int = 0,
    min_rows: int = 1,
    column: str = "part",
) -> pd.DataFrame:
    """The table with a ``column`` (default ``part``) saying which of ``parts`` simulated
    sites each row goes to: ``iid``, ``dirichlet`` label skew on ``target``, or
    ``quantity`` skew (Dirichlet(``alpha``) sizes). Seeded; every part gets at least
    ``min_rows`` rows, or the tool refuses with the largest ``parts`` it can honour.
    Logs each part's size.
    """
    if column in table.columns:
        raise ValueError(f"the table already has a column {column!r}; choose another 'column'")
    labels = None
    if scheme == "dirichlet":
        if target not in table.columns:
            raise ValueError(f"no column {target!r} to skew labels by (set 'target')")
        labels = table[target].to_numpy()
    dealt = partition_indices(
        len(table), parts, scheme=scheme, labels=labels, alpha=alpha, seed=seed,
        min_rows=min_rows,
    )  # fmt: skip
    which = np.empty(len(table), dtype=np.int64)
    for p, rows in enumerate(dealt):
        which[rows] = p
    out = table.assign(**{column: which})
    sizes = [len(r) for r in dealt]
    ctx.log(f"{scheme} partition of {len(table)} rows into {parts} parts: sizes {sizes}")
    return out
