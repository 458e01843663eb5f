"""Deal scikit-learn's breast cancer Wisconsin data to three hospitals, non-IID.

    python examples/breast_cancer/make_data.py [--out DIR] [--seed 41] [--alpha 0.5]
                                               [--hospitals N] [--iid]

writes ``DIR/hospital-{a,b,c}/breast.csv`` (default DIR: ``data`` next to this file),
one CSV per hospital whose ``split`` column says ``train`` or ``test``, and
``DIR/nodes.yaml``, the local-nodes layout ``flowfed run`` reads (docs/nodes.md). It
prints each hospital's class counts. ``--hospitals N`` deals to N hospitals (for
``--simulate`` at scale), ``--iid`` with equal label mixes. The procedure, fully
determined by the seed:

1. Load the 569 rows (30 features, ``target``: 0 = malignant, 1 = benign) bundled with
   scikit-learn; nothing is downloaded.
2. Split them 80/20 into train and test, stratified on ``target``, with scikit-learn's
   ``train_test_split(random_state=0)``: 455 train rows and 114 test rows.
3. Draw, with ``numpy.random.default_rng(seed)``, one Dirichlet(alpha, alpha, alpha)
   vector per class (malignant first): the shares of that class going to hospitals A,
   B and C. alpha = 0.5 makes the shares uneven, so the hospitals' label mixes differ
   (a "label-skew" non-IID split, as in Hsu et al. 2019).
4. Deal each class of the train part: every hospital first gets ``min_train`` rows
   (5) of the class, so each can train and stratify; the remaining rows are shared in
   proportion to the Dirichlet vector, rounded down, and the leftover rows go one each
   to the largest fractional remainders (ties to the earlier hospital). Which rows go
   where is a random permutation of the class's rows (same generator).
5. Deal the test part the same way with the *same* per-class shares (a hospital's test
   rows mirror its own patient mix) and ``min_test`` rows (5) per class and hospital
   (every class count a node releases is then at least the default k = 5).
6. Each hospital's rows (both splits) are written in their original order, without an
   index column.

The same seed gives byte-identical files on every run. The default seed, 41, deals every
hospital more than 100 training rows, enough for the 31 weights of a logistic regression
to pass a node's default disclosure check (at most 0.33 parameters per training row,
docs/node-policy.md), and at least 5 test rows of each class (the default k), while the
label mixes stay far apart (6%, 77% and 35% malignant).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

HOSPITALS = ("a", "b", "c")
DEFAULT_OUT = Path(__file__).resolve().parent / "data"


def allocate(n: int, shares: np.ndarray, minimum: int) -> list[int]:
    """Split ``n`` rows: ``minimum`` each, the rest by ``shares`` (largest remainders)."""
    k = len(shares)
    if n < k * minimum:
        raise ValueError(f"{n} rows cannot give {k} hospitals {minimum} rows each")
    rest = n - k * minimum
    raw = rest * shares
    counts = np.floor(raw).astype(int)
    leftover = rest - int(counts.sum())
    # Stable sort on the negated fractions: ties go to the earlier hospital.
    for i in np.argsort(-(raw - counts), kind="stable")[:leftover]:
        counts[i] += 1
    return [minimum + int(c) for c in counts]


def deal(
    part: pd.DataFrame,
    shares: dict[int, np.ndarray],
    minimum: int,
    rng: np.random.Generator,
    names: list[str] | tuple[str, ...] = HOSPITALS,
) -> list[pd.DataFrame]:
    """Deal ``part``'s rows to the hospitals, class by class, per ``shares``."""
    chunks: list[list[pd.Index]] = [[] for _ in names]
    for label in sorted(shares):
        rows = part.index[part["target"] == label].sort_values()
        rows = rows[rng.permutation(len(rows))]
        start = 0
        for h, count in enumerate(allocate(len(rows), shares[label], minimum)):
            chunks[h].append(rows[start : start + count])
            start += count
    return [part.loc[np.sort(np.concatenate(c))] for c in chunks]


def hospital_names(n: int) -> list[str]:
    """``a, b, c`` for the demo's three hospitals; ``001 … n`` for simulations."""
    if n <= len(HOSPITALS):
        return list(HOSPITALS[:n])
    width = len(str(n))
    return [f"{i:0{width}d}" for i in range(1, n + 1)]


def make_data(
    out: Path = DEFAULT_OUT,
    *,
    seed: int = 41,
    alpha: float = 0.5,
    hospitals: int = 3,
    iid: bool = False,
    min_train: int = 5,
    min_test: int = 5,
) -> dict[str, dict[str, dict[int, int]]]:
    """Write each hospital's ``breast.csv`` and ``nodes.yaml`` under ``out``.

    Returns the class counts per hospital and split. With ``iid`` the shares are equal
    (every hospital sees the same label mix). With many hospitals the per-class minimums
    shrink so the 455 training and 114 test rows go round; every hospital keeps at least
    one row of each split, and more than 114 hospitals are refused (``ValueError``
    naming the largest count it can honour).
    """
    names = hospital_names(hospitals)
    k = len(names)
    frame = load_breast_cancer(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.2, stratify=frame["target"], random_state=0)
    most = min(len(train), len(test))
    if k > most:
        raise ValueError(
            f"--hospitals {k}: the {len(test)} test rows can give at most {most} hospitals "
            "one row of each split"
        )
    rng = np.random.default_rng(seed)
    labels = sorted(int(v) for v in frame["target"].unique())
    if iid:
        shares = {label: np.full(k, 1.0 / k) for label in labels}
    else:
        shares = {label: rng.dirichlet([alpha] * k) for label in labels}
    smallest = min(int((train["target"] == lb).sum()) for lb in labels)
    smallest_test = min(int((test["target"] == lb).sum()) for lb in labels)
    parts = {
        "train": deal(train, shares, min(min_train, smallest // k), rng, names),
        "test": deal(test, shares, min(min_test, smallest_test // k), rng, names),
    }
    _no_empty(parts["test"])
    _no_empty(parts["train"])
    counts: dict[str, dict[str, dict[int, int]]] = {}
    layout: dict[str, dict[str, str]] = {}
    for h, name in enumerate(names):
        folder = Path(out) / f"hospital-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        counts[name] = {}
        tables = []
        for split, dealt in parts.items():
            table = dealt[h].assign(split=split)
            tables.append(table)
            vc = table["target"].value_counts()
            counts[name][split] = {label: int(vc.get(label, 0)) for label in labels}
        both = pd.concat(tables).sort_index()
        both.to_csv(folder / "breast.csv", index=False, lineterminator="\n")
        layout[f"hospital-{name}"] = {"breast": f"hospital-{name}/breast.csv"}
    (Path(out) / "nodes.yaml").write_text(
        "# written by make_data.py: which node holds which CSV (paths relative to here)\n"
        + yaml.safe_dump({"nodes": layout}, sort_keys=False)
    )
    return counts


def _no_empty(tables: list[pd.DataFrame]) -> None:
    """Give every hospital left without rows one row of the largest hospital.

    Always the currently largest, so a donor never becomes empty itself (there are at
    least as many rows as hospitals: make_data refuses otherwise).
    """
    for i in range(len(tables)):
        if len(tables[i]) == 0:
            j = max(range(len(tables)), key=lambda x: len(tables[x]))
            tables[i] = tables[j].iloc[:1]
            tables[j] = tables[j].iloc[1:]
    assert all(len(t) for t in tables)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=41, help="Dirichlet and dealing seed")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    parser.add_argument("--hospitals", type=int, default=3, help="how many hospitals")
    parser.add_argument("--iid", action="store_true", help="equal label mix everywhere")
    parser.add_argument("--quiet", action="store_true", help="no table")
    args = parser.parse_args(argv)
    if args.hospitals < 1:
        parser.error("--hospitals must be at least 1")
    try:
        counts = make_data(
            args.out, seed=args.seed, alpha=args.alpha, hospitals=args.hospitals, iid=args.iid
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {len(counts)} hospitals' breast.csv and nodes.yaml under {args.out}")
    if args.quiet:
        return
    print(f"{'hospital':<10} {'split':<6} {'malignant (0)':>14} {'benign (1)':>11} {'rows':>5}")
    for name, splits in counts.items():
        for split, c in splits.items():
            print(f"{name.upper():<10} {split:<6} {c[0]:>14} {c[1]:>11} {c[0] + c[1]:>5}")


if __name__ == "__main__":
    main()
