"""Issue 21, defect 8: the partitioner tool and make_data.py never write empty sites."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowfed.tools.library.partition import partition, partition_indices
from tests.library.conftest import Recorder

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer" / "make_data.py"


def _table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n), "target": rng.integers(0, 2, n)})


def test_iid_parts_are_near_equal_and_cover_every_row() -> None:
    parts = partition_indices(103, 10, scheme="iid", seed=3)
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))


def test_dirichlet_skews_labels_more_for_small_alpha() -> None:
    y = _table()["target"].to_numpy()

    def spread(alpha: float) -> float:  # mean |share of class 1 - overall share| per part
        parts = partition_indices(len(y), 10, scheme="dirichlet", labels=y, alpha=alpha, seed=1)
        return float(np.mean([abs(y[p].mean() - y.mean()) for p in parts]))

    assert spread(0.1) > 3 * spread(100.0)


def test_quantity_skew_sizes_vary_and_seeds_reproduce() -> None:
    a = partition_indices(1000, 10, scheme="quantity", alpha=0.5, seed=5)
    b = partition_indices(1000, 10, scheme="quantity", alpha=0.5, seed=5)
    c = partition_indices(1000, 10, scheme="quantity", alpha=0.5, seed=6)
    assert [p.tolist() for p in a] == [p.tolist() for p in b]
    assert [p.tolist() for p in a] != [p.tolist() for p in c]
    sizes = [len(p) for p in a]
    assert max(sizes) > 3 * min(sizes) and min(sizes) >= 1


def test_every_part_gets_min_rows_or_a_clear_refusal() -> None:
    y = np.array([0] * 95 + [1] * 5)
    parts = partition_indices(100, 50, scheme="dirichlet", labels=y, alpha=0.05, seed=0,
                              min_rows=2)  # fmt: skip
    assert min(len(p) for p in parts) >= 2
    with pytest.raises(ValueError, match="at most 33 parts"):
        partition_indices(100, 34, min_rows=3)


def test_partition_tool_adds_a_part_column() -> None:
    ctx = Recorder()
    out = partition(_table(), ctx, parts=4, scheme="dirichlet", alpha=0.3, seed=2)
    assert sorted(out["part"].unique().tolist()) == [0, 1, 2, 3]
    assert len(out) == 600 and "dirichlet partition of 600 rows into 4 parts" in ctx.logs()[0]
    with pytest.raises(ValueError, match="already has a column 'x'"):
        partition(_table(), ctx, parts=2, column="x")


def test_make_data_thousand_hospitals_refused_with_what_it_can_do(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(tmp_path), "--hospitals", "1000", "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "at most 114 hospitals" in proc.stderr
    assert not list(tmp_path.glob("hospital-*"))  # nothing half-written
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(tmp_path), "--hospitals", "114", "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    files = list(tmp_path.glob("hospital-*/breast.csv"))
    assert len(files) == 114
    for f in files:
        counts = pd.read_csv(f)["split"].value_counts()
        assert counts.get("train", 0) >= 1 and counts.get("test", 0) >= 1, f
