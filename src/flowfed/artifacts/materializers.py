"""Materializers: turn a tool's output value into bytes (and back) by its type.

The JSON path is the hot path of every small task, so :func:`materialize` tests the exact
type first and only then considers numpy, pandas, files, models and pickle. numpy, pandas and
pyarrow are imported only when such a value shows up (a value of those types implies its
library is already imported anyway).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from flowfed.tools.core import model_bytes, model_from_bytes, model_header, split_model_bytes

#: Every kind a :class:`Materialized` can have.
KINDS = ("json", "numpy", "pandas", "bytes", "file", "model", "pickle")

_JSON_SCALARS = frozenset({type(None), bool, int, float, str})
_JSON_TYPES = _JSON_SCALARS | {list, tuple, dict}
_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), allow_nan=True
).encode  # ensure_ascii (default): C fast path, and lone surrogates still encode
_sha256 = hashlib.sha256


@dataclass(slots=True)
class Materialized:
    """A value turned into bytes: how (``kind``), from what type, and its content hash."""

    kind: str
    type_name: str
    data: bytes
    hash: str
    pickled: bool = False
    #: Small JSON-able facts for :func:`load` and for humans (file name, dtype, shape...).
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of bytes."""
        return len(self.data)


class NotMaterializable(TypeError):
    """A tool returned a value flowfed cannot store without pickling."""

    def __init__(self, type_name: str, hint: str) -> None:
        self.type_name = type_name
        self.hint = hint
        super().__init__(f"cannot store a value of type {type_name}: {hint}")


def type_name_of(value: object) -> str:
    """``module.QualName`` of a value's type (bare name for builtins)."""
    cls = type(value)
    mod = cls.__module__
    return cls.__qualname__ if mod == "builtins" else f"{mod}.{cls.__qualname__}"


def _json_ok(value: Any) -> bool:
    t = type(value)
    if t in _JSON_SCALARS:
        return True
    if t is list or t is tuple:
        return all(_json_ok(v) for v in value)
    if t is dict:
        # json.dumps would silently turn int keys into strings: not a faithful round trip.
        return all(type(k) is str and _json_ok(v) for k, v in value.items())
    return False


def _is_model(value: object) -> bool:
    cls = type(value)
    return (
        getattr(cls, "__flowfed_model__", False) is True
        and callable(getattr(cls, "save", None))
        and callable(getattr(cls, "load", None))
    )


def materialize(value: object, *, allow_pickle: bool = False) -> Materialized:
    """Serialize ``value`` with the first materializer that fits its type."""
    t = type(value)
    if t in _JSON_TYPES and (t in _JSON_SCALARS or _json_ok(value)):
        data = _dumps(value).encode()
        name = t.__name__
        return Materialized("json", name, data, _sha256(data).hexdigest())
    if t is bytes or t is bytearray:
        data = bytes(cast(bytes, value))
        return Materialized("bytes", t.__name__, data, _sha256(data).hexdigest())
    root = t.__module__.partition(".")[0]
    if root == "numpy":
        m = _numpy(value)
        if m is not None:
            return m
    elif root == "pandas":
        m = _pandas(value)
        if m is not None:
            return m
    if isinstance(value, Path) and value.is_file():
        data = value.read_bytes()
        return Materialized(
            "file",
            type_name_of(value),
            data,
            _sha256(data).hexdigest(),
            meta={"filename": value.name},
        )
    if _is_model(value):
        return _model(value)
    tn = type_name_of(value)
    if allow_pickle:
        import pickle

        try:
            data = pickle.dumps(value, protocol=5)
        except Exception as exc:
            raise NotMaterializable(tn, f"pickling failed ({exc})") from exc
        return Materialized("pickle", tn, data, _sha256(data).hexdigest(), pickled=True)
    if isinstance(value, Path):
        hint = f"the path {str(value)!r} is not an existing file"
    else:
        hint = (
            "return JSON data, a numpy array, a pandas DataFrame, bytes, a pathlib.Path to a "
            "file or a model with save/load (__flowfed_model__ = True); or declare the tool "
            "with allow_pickle=True to store it with pickle"
        )
    raise NotMaterializable(tn, hint)


def _numpy(value: Any) -> Materialized | None:
    import numpy as np

    if not isinstance(value, np.ndarray):
        return None
    buf = io.BytesIO()
    try:
        np.save(buf, value, allow_pickle=False)
    except ValueError:  # object arrays need pickle: let the generic path decide
        return None
    data = buf.getvalue()
    meta = {"dtype": value.dtype.str, "shape": list(value.shape)}
    return Materialized("numpy", type_name_of(value), data, _sha256(data).hexdigest(), meta=meta)


def _pandas(value: Any) -> Materialized | None:
    import pandas as pd

    if not isinstance(value, pd.DataFrame):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pandas(value, preserve_index=None)
    except (pa.ArrowException, TypeError, ValueError):
        return None  # mixed/object columns arrow cannot type: fall back to pickle rules
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    meta = {"rows": len(value), "columns": len(value.columns)}
    return Materialized("pandas", type_name_of(value), data, _sha256(data).hexdigest(), meta=meta)


_SCRATCH: list[Path] = []


def _scratch_file() -> Path:
    """A fresh path in this process's scratch folder (made once, removed at exit).

    Models save to and load from files; a folder per call cost a mkdir and an rmdir each
    time, several milliseconds per federated round.
    """
    if not _SCRATCH:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="flowfed-models-"))
        atexit.register(shutil.rmtree, folder, True)
        _SCRATCH.append(folder)
    import uuid

    return _SCRATCH[0] / uuid.uuid4().hex


def _model(value: Any) -> Materialized:
    try:
        body = model_bytes(value, _scratch_file())
    except (TypeError, ValueError) as exc:
        raise NotMaterializable(type_name_of(value), str(exc)) from exc
    data = model_header(value) + body
    cls = type(value)
    return Materialized(
        "model",
        type_name_of(value),
        data,
        _sha256(data).hexdigest(),
        meta={"class": f"{cls.__module__}:{cls.__qualname__}"},
    )


def load(kind: str, data: bytes, meta: dict[str, Any] | None = None) -> object:
    """Rebuild a value from what :func:`materialize` produced (``meta`` as stored)."""
    meta = meta or {}
    if kind == "json":
        return json.loads(data)
    if kind == "bytes":
        return bytes(data)
    if kind == "numpy":
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    if kind == "pandas":
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pandas()
    if kind == "file":
        import tempfile

        # A fresh directory keeps the original file name (extensions matter to readers).
        name = os.path.basename(str(meta.get("filename") or "artifact")) or "artifact"
        path = Path(tempfile.mkdtemp(prefix="flowfed-file-")) / name
        path.write_bytes(data)
        return path
    if kind == "model":
        return _load_model(data)
    if kind == "pickle":
        import pickle

        return pickle.loads(data)
    raise ValueError(f"unknown artifact kind {kind!r} (known: {', '.join(KINDS)})")


def _load_model(data: bytes) -> object:
    cls, body = split_model_bytes(data)
    model = model_from_bytes(cls, body)
    if model is not NotImplemented:
        return model
    path = _scratch_file()
    path.write_bytes(body)
    try:
        # The file is removed afterwards: a model's load() must read it fully.
        return cls.load(path)
    finally:
        path.unlink(missing_ok=True)
