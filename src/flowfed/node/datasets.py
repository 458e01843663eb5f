"""A node's datasets as it registers them: name, format, rows, columns, SHA-256.

Light on purpose (pandas only, imported when a dataset is read): the simulated nodes of
``--simulate`` use it without loading the node agent's WebSocket and runner machinery.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


class NodeSetupError(ValueError):
    """A bad option, credentials file or dataset: the message says which and where."""


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan_dataset(name: str, path: Path) -> dict[str, Any]:
    """What the node knows of a dataset: name, path, format, rows, columns, hash.

    ``path`` stays on the node; the server gets everything else.
    """
    import pandas as pd

    if not path.is_file():
        raise NodeSetupError(f"--dataset {name}={path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        fmt = "csv"
    elif suffix in (".parquet", ".pq"):
        fmt = "parquet"
    else:
        raise NodeSetupError(f"--dataset {name}={path}: only .csv and .parquet files are supported")
    try:
        table = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except Exception as exc:
        raise NodeSetupError(f"--dataset {name}={path}: cannot read it: {exc}") from None
    return {
        "name": name,
        "path": str(path.resolve()),
        "format": fmt,
        "rows": len(table),
        "columns": [{"name": str(c), "dtype": str(t)} for c, t in table.dtypes.items()],
        "hash": file_sha256(path),
    }
