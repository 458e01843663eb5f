"""Canonical content fingerprints, normalized code hashes and task cache keys.

Every value is fed into SHA-256 as a type-tagged, length-prefixed encoding, so the result is
stable across processes and machines (never ``hash()``, ``repr()`` or ``id()``). Types are
dispatched with :func:`functools.singledispatch`; numpy and pandas handlers are registered the
first time a value from those libraries shows up, so importing this module imports neither.
A value of any other type fingerprints to :data:`UNHASHABLE`, which disables caching rather
than risking a wrong cache hit.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final


class _Unhashable:
    """Type of :data:`UNHASHABLE` (a singleton, falsy)."""

    _instance: _Unhashable | None = None

    def __new__(cls) -> _Unhashable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNHASHABLE"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNHASHABLE"


#: Returned by :func:`fingerprint` for values without a canonical encoding.
UNHASHABLE: Final = _Unhashable()


class _NoEncoding(Exception):
    """Raised inside the encoder when some nested value has no canonical encoding."""


_Sink = Callable[[bytes], None]
_pack_q = struct.Struct("<q").pack
_pack_d = struct.Struct("<d").pack


def _blob(w: _Sink, tag: bytes, data: bytes) -> None:
    w(tag)
    w(_pack_q(len(data)))
    w(data)


@functools.singledispatch
def _encode_any(value: object, w: _Sink) -> None:
    cls = type(value)
    root = cls.__module__.partition(".")[0]
    installer = _LAZY.pop(root, None)
    if installer is not None:
        # First numpy/pandas value: register its handlers, then dispatch again.
        installer()
        _encode(value, w)
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _blob(w, b"D", f"{cls.__module__}.{cls.__qualname__}".encode())
        fields = dataclasses.fields(value)
        w(_pack_q(len(fields)))
        for f in fields:
            _encode(f.name, w)
            _encode(getattr(value, f.name), w)
        return
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        _blob(w, b"M", f"{cls.__module__}.{cls.__qualname__}".encode())
        _encode(value.model_dump(mode="python"), w)
        return
    raise _NoEncoding(cls)


# singledispatch looks a type up in a WeakKeyDictionary written in Python on every call,
# which made fingerprinting a small config cost tens of microseconds per task; a plain
# dict of the resolved handler per exact type does the same dispatch for a fraction.
_handlers: dict[type, Callable[[Any, _Sink], None]] = {}


def _encode(value: object, w: _Sink) -> None:
    cls = value.__class__
    try:
        handler = _handlers[cls]
    except KeyError:
        handler = _handlers[cls] = _encode_any.dispatch(cls)
    handler(value, w)


def _register(cls: Any, func: Any = None) -> Any:
    """Register an encoder for ``cls`` (singledispatch's ``register``) and drop resolved
    handlers, since a new registration can change what a type resolves to."""
    _handlers.clear()
    return _encode_any.register(cls) if func is None else _encode_any.register(cls, func)


@_register(type(None))
def _(value: None, w: _Sink) -> None:
    w(b"N")


@_register(bool)
def _(value: bool, w: _Sink) -> None:
    w(b"T" if value else b"F")


@_register(int)
def _(value: int, w: _Sink) -> None:
    _blob(w, b"I", str(value).encode())


@_register(float)
def _(value: float, w: _Sink) -> None:
    # Every NaN is the same value for caching purposes, whatever its payload bits.
    w(b"R" + (b"nan" if value != value else _pack_d(value)))


@_register(str)
def _(value: str, w: _Sink) -> None:
    _blob(w, b"S", value.encode("utf-8", "surrogatepass"))


@_register(bytes)
@_register(bytearray)
@_register(memoryview)
def _(value: bytes | bytearray | memoryview, w: _Sink) -> None:
    _blob(w, b"B", bytes(value))


@_register(list)
@_register(tuple)
def _(value: list[Any] | tuple[Any, ...], w: _Sink) -> None:
    # Lists and tuples share a tag: a tuple stored as JSON comes back as a list, and its
    # fingerprint must not change on the way.
    w(b"L")
    w(_pack_q(len(value)))
    for item in value:
        _encode(item, w)


def _first(pair: tuple[bytes, Any]) -> bytes:
    return pair[0]


def _digest_of(value: object) -> bytes:
    h = hashlib.sha256()
    _encode(value, h.update)
    return h.digest()


@_register(dict)
def _(value: dict[Any, Any], w: _Sink) -> None:
    # Sort by the encoding of the key, so mixed key types still order deterministically.
    items = sorted(((_digest_of(k), v) for k, v in value.items()), key=_first)
    w(b"{")
    w(_pack_q(len(items)))
    for kd, v in items:
        w(kd)
        _encode(v, w)


@_register(set)
@_register(frozenset)
def _(value: set[Any] | frozenset[Any], w: _Sink) -> None:
    digests = sorted(_digest_of(v) for v in value)
    w(b"(")
    w(_pack_q(len(digests)))
    for d in digests:
        w(d)


@_register(enum.Enum)
def _(value: enum.Enum, w: _Sink) -> None:
    cls = type(value)
    _blob(w, b"E", f"{cls.__module__}.{cls.__qualname__}".encode())
    _encode(value.value, w)


@_register(Path)
def _(value: Path, w: _Sink) -> None:
    # A path's fingerprint is its content: the same file elsewhere hits the cache, an
    # edited file at the same place does not.
    if value.is_file():
        _file_digest(value, w)
    elif value.is_dir():
        entries = sorted(p for p in value.rglob("*") if p.is_file())
        w(b"/")
        w(_pack_q(len(entries)))
        for p in entries:
            _encode(p.relative_to(value).as_posix(), w)
            _file_digest(p, w)
    else:
        raise _NoEncoding(value)


def _file_digest(path: Path, w: _Sink) -> None:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    w(b"P")
    w(h.digest())


def _install_numpy() -> None:
    import numpy as np

    def enc_array(value: Any, w: _Sink) -> None:
        if value.dtype.hasobject:
            # Object arrays hold pointers; hash their elements instead.
            _blob(w, b"O", str(value.shape).encode())
            _encode(value.tolist(), w)
            return
        _blob(w, b"A", f"{value.dtype.str}|{value.shape}".encode())
        _blob(w, b"a", np.ascontiguousarray(value).tobytes())

    _register(np.ndarray, enc_array)
    _register(np.generic, lambda value, w: enc_array(np.asarray(value), w))


def _install_pandas() -> None:
    import pandas as pd
    from pandas.util import hash_pandas_object

    def enc_frame(value: Any, w: _Sink) -> None:
        try:
            rows = hash_pandas_object(value, index=True).to_numpy().tobytes()
        except TypeError as exc:  # unhashable cells (lists, dicts, ...)
            raise _NoEncoding(type(value)) from exc
        _blob(w, b"p", type(value).__name__.encode())
        if isinstance(value, pd.DataFrame):
            _encode([str(c) for c in value.columns], w)
            _encode([str(d) for d in value.dtypes], w)
        else:
            _encode(str(value.name), w)
            _encode(str(value.dtype), w)
        _blob(w, b"h", rows)

    _register(pd.DataFrame, enc_frame)
    _register(pd.Series, enc_frame)
    _register(pd.Index, lambda value, w: enc_frame(value.to_series(), w))


_LAZY: dict[str, Callable[[], None]] = {"numpy": _install_numpy, "pandas": _install_pandas}


def fingerprint(value: object) -> str | _Unhashable:
    """SHA-256 hex of the canonical encoding of ``value``, or :data:`UNHASHABLE`."""
    h = hashlib.sha256()
    try:
        _encode(value, h.update)
    except (_NoEncoding, RecursionError):
        return UNHASHABLE
    return h.hexdigest()


def _strip(tree: Any) -> Any:
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _code_object_digest(code: Any, h: Any) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _code_object_digest(const, h)
        else:
            fp = fingerprint(const)
            h.update((fp if isinstance(fp, str) else repr(type(const))).encode())


def _source_by_positions(fn: Any) -> str | None:
    """A function's source lines, from its first line (decorators included) to the last
    line any of its instructions (or of its nested functions') spans.

    ``inspect.getsource`` finds the end of a definition by tokenizing from its first line,
    milliseconds for a long signature; the code object already knows where it ends. The
    caller parses the slice and falls back to ``inspect`` when it is not a whole statement.
    """
    import linecache

    code = getattr(fn, "__code__", None)
    if (
        code is None
        or type(fn).__name__ != "function"
        or fn.__name__ == "<lambda>"
        or hasattr(fn, "__wrapped__")  # inspect reads the wrapped function's source
    ):
        return None
    lines = linecache.getlines(code.co_filename, fn.__globals__)
    if not lines:
        return None
    last = 0
    todo = [code]
    while todo:
        c = todo.pop()
        for _, end, _, _ in c.co_positions():
            if end is not None and end > last:
                last = end
        todo.extend(k for k in c.co_consts if hasattr(k, "co_positions"))
    first = code.co_firstlineno
    if not 0 < first <= last <= len(lines):
        return None
    return "".join(lines[first - 1 : last])
