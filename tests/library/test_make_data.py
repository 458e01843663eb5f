"""examples/breast_cancer/make_data.py: deterministic bytes and a non-IID label split."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer" / "make_data.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bc_make_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.csv"))}


def part(out: Path, h: str, split: str) -> pd.DataFrame:
    """One hospital's rows of one split (its CSV's ``split`` column says which)."""
    table = pd.read_csv(out / f"hospital-{h}" / "breast.csv")
    return table[table["split"] == split].drop(columns="split")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bc") / "data"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    return out, res.stdout


def test_writes_three_hospitals_and_prints_their_class_counts(made: tuple[Path, str]) -> None:
    out, stdout = made
    assert sorted(files(out)) == [f"hospital-{h}/breast.csv" for h in "abc"]
    layout = (out / "nodes.yaml").read_text()
    assert "hospital-a:\n    breast: hospital-a/breast.csv" in layout
    for h in "abc":
        table = part(out, h, "train")
        counts = table["target"].value_counts()
        assert f"{h.upper():<10} train  {counts[0]:>14} {counts[1]:>11}" in stdout


def test_same_bytes_twice(made: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = made
    load_script().make_data(tmp_path / "again")
    assert files(tmp_path / "again") == files(out)


def test_the_split_partitions_a_stratified_80_20_split(made: tuple[Path, str]) -> None:
    out, _ = made
    train = pd.concat(part(out, h, "train") for h in "abc")
    test = pd.concat(part(out, h, "test") for h in "abc")
    assert (len(train), len(test)) == (455, 114)
    assert train["target"].value_counts().to_dict() == {1: 285, 0: 170}
    assert test["target"].value_counts().to_dict() == {1: 72, 0: 42}
    # Every original row exactly once: no duplicate across hospitals or parts.
    assert not pd.concat([train, test]).duplicated().any()


def test_label_split_is_non_iid_yet_every_hospital_has_both_classes(
    made: tuple[Path, str],
) -> None:
    out, _ = made
    malignant_share = {}
    for h in "abc":
        train = part(out, h, "train")
        test = part(out, h, "test")
        assert train["target"].value_counts().min() >= 5
        assert test["target"].value_counts().min() >= 2
        malignant_share[h] = float((train["target"] == 0).mean())
    assert max(malignant_share.values()) - min(malignant_share.values()) > 0.2


def test_allocation_gives_the_minimum_then_largest_remainders() -> None:
    import numpy as np

    allocate = load_script().allocate
    # 20 rows, 2 each first; 14 left by shares 0.5/0.3/0.2 = 7/4.2/2.8 -> 7, 4, 3
    assert allocate(20, np.array([0.5, 0.3, 0.2]), 2) == [9, 6, 5]
    with pytest.raises(ValueError):
        allocate(5, np.array([0.5, 0.3, 0.2]), 2)
