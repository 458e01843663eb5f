"""Split scikit-learn's 8x8 digits (1,797 images, bundled: nothing is downloaded) across
five simulated hospitals with ``flowfed.partition``'s Dirichlet label skew.

    python examples/digits_cnn/make_data.py [--out DIR] [--hospitals 5] [--alpha 1.0]
                                            [--seed 0]

Writes ``DIR/hospital-N/digits.csv`` (columns ``p0..p63``, ``target``, ``split``: an 80/20
train/test split per hospital, seeded) and ``DIR/nodes.yaml``. Default DIR: ``data``
next to this file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.datasets import load_digits

from flowfed.tools.library.partition import partition_indices

DEFAULT_OUT = Path(__file__).resolve().parent / "data"


def make_data(out: Path, *, hospitals: int = 5, alpha: float = 1.0, seed: int = 0) -> list[int]:
    """Write the hospitals' CSVs and nodes.yaml; return each hospital's row count."""
    digits = load_digits()
    frame = pd.DataFrame(digits.data, columns=[f"p{i}" for i in range(64)])
    frame["target"] = digits.target
    parts = partition_indices(
        len(frame), hospitals, scheme="dirichlet", labels=frame["target"].to_numpy(),
        alpha=alpha, seed=seed, min_rows=20,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    layout = {}
    sizes = []
    for h, rows in enumerate(parts, start=1):
        table = frame.iloc[rows].copy()
        table["split"] = np.where(rng.random(len(table)) < 0.8, "train", "test")
        folder = Path(out) / f"hospital-{h}"
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / "digits.csv", index=False, lineterminator="\n")
        layout[f"hospital-{h}"] = {"digits": f"hospital-{h}/digits.csv"}
        sizes.append(len(table))
    (Path(out) / "nodes.yaml").write_text(
        "# written by make_data.py\n" + yaml.safe_dump({"nodes": layout}, sort_keys=False)
    )
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--hospitals", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        sizes = make_data(args.out, hospitals=args.hospitals, alpha=args.alpha, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {len(sizes)} hospitals under {args.out}: rows {sizes}")


if __name__ == "__main__":
    main()
