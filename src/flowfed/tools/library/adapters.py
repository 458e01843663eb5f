"""Database adapters: the entry points that load data from outside a flow.

They take no inputs (seed 001: an adapter *defines* provenance), so each one logs what it
read: the source, the shape and, for files, the SHA-256 of the bytes.

A task's cache key is its tool, code, config and input hashes. An adapter has no inputs,
so a file that changes under an unchanged path would be served from the cache. Pin the
content with ``sha256`` (a changed file then fails loudly and a new hash is a new config),
or set ``cache: false`` on the step when the source is meant to change.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from flowfed.tools import Context, tool

#: The data sets scikit-learn ships inside its wheel (nothing is downloaded).
SKLEARN_DATASETS = ("breast_cancer", "iris", "wine", "diabetes")


def _file_digest(path: str) -> str | None:
    """SHA-256 of a local file; None for a URL (pandas reads it through fsspec)."""
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _path_version(config: dict[str, Any]) -> str | None:
    """The cache's view of a file source: its content hash (None for URLs: always read)."""
    return _file_digest(str(config["path"]))


def _never_cached(config: dict[str, Any]) -> None:
    """A database's contents have no cheap version: every run reads them again."""
    return None


def _check_pin(path: str, actual: str | None, expected: str | None, ctx: Context) -> None:
    if actual is not None:
        ctx.log(f"read {path} (sha256 {actual})")
    if expected is None:
        return
    if actual is None:
        raise ValueError(f"sha256 is pinned but {path!r} is not a local file that can be hashed")
    if actual != expected.lower():
        raise ValueError(f"{path!r} has sha256 {actual}, but the step pins {expected.lower()}")


@tool(name="flowfed.csv", version="1.0", type="database-adapter", source_version=_path_version)
def csv(
    ctx: Context,
    *,
    path: str,
    options: dict[str, Any] | None = None,
    sha256: str | None = None,
) -> pd.DataFrame:
    """Read a CSV file (a local path or an fsspec URL) into a DataFrame.

    ``options`` are passed to ``pandas.read_csv`` (``sep``, ``usecols``, ``dtype``...).
    ``sha256`` pins the file's content: a different file is an error, not a silent change.
    A relative path is relative to the directory ``flowfed run`` is started from.
    """
    _check_pin(path, _file_digest(path), sha256, ctx)
    try:
        table = pd.read_csv(path, **(options or {}))
    except TypeError as exc:  # an unknown option: say it is one, not a pandas internals error
        raise ValueError(f"bad read_csv option in {sorted(options or {})}: {exc}") from None
    ctx.log(f"loaded {len(table)} rows x {table.shape[1]} columns from {path}")
    return table


@tool(name="flowfed.parquet", version="1.0", type="database-adapter", source_version=_path_version)
def parquet(
    ctx: Context,
    *,
    path: str,
    columns: list[str] | None = None,
    sha256: str | None = None,
) -> pd.DataFrame:
    """Read a Parquet file (a local path or an fsspec URL), optionally only some columns."""
    _check_pin(path, _file_digest(path), sha256, ctx)
    table = pd.read_parquet(path, columns=columns)
    ctx.log(f"loaded {len(table)} rows x {table.shape[1]} columns from {path}")
    return table


@tool(
    name="flowfed.node_dataset",
    version="1.0",
    type="database-adapter",
    source_version=_never_cached,
)
def node_dataset(ctx: Context) -> pd.DataFrame:
    """Read the node dataset this task is placed on (``on: each-dataset``) into a DataFrame.

    The node agent fills ``ctx.dataset`` (name, path, format, rows, columns, hash) from
    what it registered; the rows never leave the node. On the central engine there is no
    dataset: the step must be placed on a data node.

    Example (a flow step):
        ``- {name: load, tool: flowfed.node_dataset, on: each-dataset, produces: raw}``
    """
    ds = ctx.dataset
    if ds is None:
        raise ValueError(
            "this step must run on a data node (on: each-dataset): "
            "flowfed.node_dataset reads the dataset of the node it is placed on"
        )
    path, fmt = str(ds["path"]), str(ds.get("format") or "csv")
    if fmt == "parquet":
        table = pd.read_parquet(path)
    elif fmt == "csv":
        table = pd.read_csv(path)
    else:
        raise ValueError(f"node dataset '{ds.get('name')}' has unknown format {fmt!r}")
    ctx.log(
        f"loaded node dataset '{ds.get('name')}' on node '{ctx.node}': {len(table)} rows x "
        f"{table.shape[1]} columns, sha256 {ds.get('hash')}"
    )
    return table


@tool(
    name="flowfed.sql_table", version="1.0", type="database-adapter", source_version=_never_cached
)
def sql_table(
    ctx: Context,
    *,
    url: str | None = None,
    url_env: str | None = None,
    table: str | None = None,
    db_schema: str | None = None,
    query: str | None = None,
    params: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Read a whole table, or the result of a query, from a database SQLAlchemy can reach.

    Give the database as ``url`` (``postgresql://user@host/db``, ``sqlite:///file.db``) or
    as ``url_env``, the name of an environment variable holding it: config is stored in
    the run catalog, so a URL with a password belongs in the environment. Give exactly one
    of ``table`` (with an optional ``db_schema``) and ``query``; a query takes bound
    parameters (``WHERE site = :site`` with ``params: {site: a}``), never string pasting.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if (url is None) == (url_env is None):
        raise ValueError("give exactly one of 'url' and 'url_env'")
    if url_env is not None:
        url = os.environ.get(url_env)
        if not url:
            raise ValueError(f"environment variable {url_env!r} is not set")
    if (table is None) == (query is None):
        raise ValueError("give exactly one of 'table' and 'query'")
    if params and query is None:
        raise ValueError("'params' bind values into a 'query'; a 'table' takes none")
    assert url is not None
    shown = make_url(url).render_as_string(hide_password=True)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if table is not None:
                frame = pd.read_sql_table(table, conn, schema=db_schema)
                source = f"table {db_schema + '.' if db_schema else ''}{table}"
            else:
                assert query is not None
                frame = pd.read_sql_query(text(query), conn, params=params or {})
                source = "query"
    finally:
        engine.dispose()
    ctx.log(f"loaded {len(frame)} rows x {frame.shape[1]} columns ({source}) from {shown}")
    return frame


@tool(name="flowfed.sklearn_dataset", version="1.0", type="database-adapter")
def sklearn_dataset(
    ctx: Context, *, name: Literal["breast_cancer", "iris", "wine", "diabetes"]
) -> pd.DataFrame:
    """One of scikit-learn's bundled data sets as a DataFrame: features plus ``target``.

    ``breast_cancer`` (569 rows, 30 features; target 0 = malignant, 1 = benign),
    ``iris`` (150 rows, classes 0-2), ``wine`` (178 rows, classes 0-2) and ``diabetes``
    (442 rows, a continuous target). The files ship with scikit-learn: nothing is
    downloaded, so the data is the same on every node with the same scikit-learn.
    """
    # Imported here: scikit-learn takes over a second to import, and registering the
    # built-in tools must stay cheap for every CLI command.
    import sklearn
    from sklearn import datasets

    loaders = {
        "breast_cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
    }
    frame = loaders[name](as_frame=True).frame
    assert isinstance(frame, pd.DataFrame)
    frame = frame.reset_index(drop=True)
    ctx.log(
        f"loaded scikit-learn {sklearn.__version__} data set {name!r}: "
        f"{len(frame)} rows, {frame.shape[1] - 1} features"
    )
    return frame
