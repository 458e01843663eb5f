"""What a tool receives: its inputs resolved, downloaded, hash-checked and typed.

In ``Started`` the engine reads every input the ``start`` message names, whether inline,
a path in the sandbox or a one-time URL, checks its declared hash, decodes it by kind
(JSON, text, ``.npy``, Parquet, a model) and validates it against the tool's annotation.
Reading inputs is a room of its own: it is most of what can go wrong before the tool runs,
and numpy, pyarrow and httpx are imported here only when an input needs them.
"""

from __future__ import annotations

import binascii
import io
import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from flowfed.runtime.failures import RunFailure
from flowfed.runtime.outputs import canonical_json
from flowfed.runtime.protocol import (
    ErrorDetail,
    InlineInput,
    PathInput,
    StartMessage,
    UrlInput,
    b64decode,
    sha256_hex,
)
from flowfed.tools.core import MODEL_MAGIC, ToolSpec, model_from_bytes, split_model_bytes


def resolve_inputs(
    spec: ToolSpec, start: StartMessage, workdir: Path, timeout: float
) -> dict[str, Any]:
    """Started: every declared input present, readable, hash-checked and typed.

    Returns the tool's arguments by input name; raises :class:`RunFailure` (phase
    ``inputs``) listing every problem found. ``workdir`` receives inputs handed over as
    files, ``timeout`` bounds each download of a one-time URL.

    Example:
        >>> from flowfed.runtime.tool_loading import load_tool
        >>> start = StartMessage(inputs={"text": InlineInput(value="  hi")})
        >>> resolve_inputs(load_tool("textwrap:dedent"), start, Path("."), 1.0)
        {'text': '  hi'}
    """
    problems: list[ErrorDetail] = []
    for name, ispec in spec.inputs.items():
        if ispec.required and name not in start.inputs:
            problems.append(ErrorDetail(field=f"inputs.{name}", message="input missing"))
    for name in start.inputs:
        if name not in spec.inputs:
            problems.append(
                ErrorDetail(
                    field=f"inputs.{name}",
                    message=f"tool '{spec.name}' has no input {name!r}",
                )
            )
    args: dict[str, Any] = {}
    if not problems:
        for name, idef in start.inputs.items():
            try:
                args[name] = _resolve_one(spec, name, idef, workdir, timeout)
            except ValueError as exc:
                problems.append(ErrorDetail(field=f"inputs.{name}", message=str(exc)))
    if problems:
        listing = "; ".join(f"{d.field}: {d.message}" for d in problems)
        raise RunFailure(
            f"input validation failed: {listing}",
            phase="inputs",
            error_type="InputError",
            details=problems,
        )
    return args


def _resolve_one(
    spec: ToolSpec,
    name: str,
    idef: InlineInput | PathInput | UrlInput,
    workdir: Path,
    timeout: float,
) -> Any:
    if isinstance(idef, InlineInput):
        if idef.data is None:
            if idef.kind != "json":
                raise ValueError(f"an inline {idef.kind} input needs base64 'data'")
            if idef.sha256:
                _check_hash(canonical_json(idef.value), idef.sha256)
            return _typed(spec, name, idef.value)
        try:
            raw = b64decode(idef.data)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"'data' is not base64: {exc}") from None
        return _decode(spec, name, raw, idef.kind, idef.sha256, workdir)
    if isinstance(idef, PathInput):
        path = Path(idef.path)
        if not path.exists():
            raise ValueError(f"{path} is not present in the sandbox")
        if idef.kind == "file" and path.is_dir():
            return path  # a dataset folder: handed over as is
        if not path.is_file():
            raise ValueError(f"{path} is not a regular file")
        if idef.kind == "file":
            if idef.sha256:
                _check_hash(path.read_bytes(), idef.sha256)
            return path
        return _decode(spec, name, path.read_bytes(), idef.kind, idef.sha256, workdir)
    raw = _fetch(idef.url, idef.headers, timeout)
    return _decode(spec, name, raw, idef.kind, idef.sha256, workdir)


def _decode(
    spec: ToolSpec, name: str, raw: bytes, kind: str, sha256: str | None, workdir: Path
) -> Any:
    if sha256:
        _check_hash(raw, sha256)
    try:
        if kind == "json":
            return _typed(spec, name, json.loads(raw))
        if kind == "text":
            return _typed(spec, name, raw.decode("utf-8"))
        if kind == "bytes":
            return raw
        if kind == "npy":
            import numpy as np  # only tools fed arrays pay for numpy

            return np.load(io.BytesIO(raw), allow_pickle=False)
        if kind == "pandas":
            import pyarrow.parquet as pq  # only tools fed DataFrames pay for pyarrow

            return pq.read_table(io.BytesIO(raw)).to_pandas()
        if kind == "pickle":
            if not spec.allow_pickle:
                raise ValueError(f"tool '{spec.name}' does not accept pickled inputs")
            import pickle

            return pickle.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid {kind}: {exc}") from None
    target = workdir / "inputs" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    cls = spec.inputs[name].annotation
    if kind == "model" and raw.startswith(MODEL_MAGIC):
        # Framed by the engine: the header names the model's class, which a tool whose
        # input is not annotated with a concrete model class loads it with.
        named, raw = split_model_bytes(raw)
        if not getattr(cls, "__flowfed_model__", False) or cls.__name__ == "Model":
            cls = named
    if kind == "model":
        if not getattr(cls, "__flowfed_model__", False):
            raise ValueError("a model input needs a flowfed.Model annotation to be loaded")
        model = model_from_bytes(cls, raw)
        if model is not NotImplemented:
            return model
        target.write_bytes(raw)
        return cls.load(target)
    target.write_bytes(raw)
    return target


def _typed(spec: ToolSpec, name: str, value: Any) -> Any:
    """Check a JSON value against the input's annotation when pydantic understands it."""
    ann = spec.inputs[name].annotation
    if ann in (Any, None) or ann is Path or getattr(ann, "__name__", "") == "_empty":
        return value
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(ann)
    except Exception:  # an annotation pydantic cannot model (a DataFrame): trust the tool
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{where + ': ' if where else ''}{err['msg']}") from None


def _check_hash(raw: bytes, expected: str) -> None:
    actual = sha256_hex(raw)
    want = expected if expected.startswith("sha256:") else f"sha256:{expected}"
    if actual != want:
        raise ValueError(f"content hash {actual} does not match the declared {want}")


def _fetch(url: str, headers: dict[str, str], timeout: float) -> bytes:
    """Download a one-time link (httpx when installed, else urllib)."""
    try:
        import httpx
    except ImportError:  # a minimal container: the standard library is enough
        return _fetch_urllib(url, headers, timeout)
    try:
        resp = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise ValueError(f"download of {url} failed: {exc}") from None
    if resp.status_code >= 400:
        raise ValueError(f"download of {url} failed: HTTP {resp.status_code}")
    return resp.content


def _fetch_urllib(url: str, headers: dict[str, str], timeout: float) -> bytes:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes(resp.read())
    except (urllib.error.URLError, OSError) as exc:
        raise ValueError(f"download of {url} failed: {exc}") from None
