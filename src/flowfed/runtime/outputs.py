"""What a tool's return value becomes on the wire: canonical JSON, ``.npy``, model bytes...

In ``Finished`` the engine turns every declared output into bytes of a known kind, hashes
them and sends each inline or as a file (:func:`output_messages`). Encoding values is its
own room: :func:`materialize_value` and :func:`canonical_json` are also what a warm worker
warms up with and what the inputs' hashes are checked against.

Example:
    >>> kind, raw, media = materialize_value("scores", {"auc": 0.9})
    >>> kind, raw, media
    ('json', b'{"auc":0.9}', 'application/json')
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import traceback
from pathlib import Path, PurePath
from typing import Any

from flowfed.runtime.failures import RunFailure
from flowfed.runtime.protocol import (
    ErrorDetail,
    OutputMessage,
    OutputPolicy,
    b64encode,
    sha256_hex,
)
from flowfed.tools.core import ToolSpec, model_bytes, model_header

MEDIA = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "npy": "application/x-npy",
    "pandas": "application/vnd.apache.parquet",
}


def canonical_json(value: Any) -> bytes:
    """The one JSON encoding outputs are hashed in (sorted keys, no spaces, no NaN).

    Example:
        >>> canonical_json({"b": 1, "a": [1.5, None]})
        b'{"a":[1.5,null],"b":1}'
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default
    ).encode()


def _json_default(obj: Any) -> Any:
    # NumPy scalars (np.int64 from a metric computation) are the usual non-JSON leaf.
    item = getattr(obj, "item", None)
    if callable(item) and type(obj).__module__ == "numpy":
        return item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def materialize_value(
    name: str, value: Any, *, workdir: Path | None = None, allow_pickle: bool = False
) -> tuple[str, bytes, str]:
    """Turn an output value into ``(kind, bytes, media_type)``.

    bytes stay bytes, a :class:`pathlib.Path` is the file's content, a ``flowfed.Model`` is
    what its ``save`` writes, a NumPy array is an ``.npy`` file, anything JSON-able is
    canonical JSON. Anything else is refused (pickled only for ``allow_pickle`` tools),
    so an output is always readable without the tool's code.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes", bytes(value), "application/octet-stream"
    if isinstance(value, PurePath):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"output '{name}' names {path}, which is not a file")
        return "file", path.read_bytes(), "application/octet-stream"
    if getattr(type(value), "__flowfed_model__", False):
        if workdir is not None:
            body = model_bytes(value, Path(workdir) / f"{name}.model")
        else:
            with tempfile.TemporaryDirectory(prefix="flowfed-model-") as tmp:
                body = model_bytes(value, Path(tmp) / f"{name}.model")
        # The engine's model artifacts name their class in a header (what it loads them
        # with); the same framing here makes a tool-side model the same artifact.
        return "model", model_header(value) + body, "application/octet-stream"
    np = sys.modules.get("numpy")  # an ndarray can only exist if numpy was imported
    if np is not None and isinstance(value, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return "npy", buf.getvalue(), MEDIA["npy"]
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, pd.DataFrame):
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(value, preserve_index=None), buf)
        return "pandas", buf.getvalue(), MEDIA["pandas"]
    try:
        return "json", canonical_json(value), MEDIA["json"]
    except (TypeError, ValueError) as exc:
        if allow_pickle:
            import pickle

            return "pickle", pickle.dumps(value), "application/x-python-pickle"
        raise ValueError(
            f"output '{name}': a {type(value).__name__} is not JSON, bytes, a file path, a "
            f"NumPy array or a flowfed.Model ({exc})"
        ) from None


def output_messages(
    spec: ToolSpec, result: Any, policy: OutputPolicy, workdir: Path
) -> list[OutputMessage]:
    """Finished: one ``output`` frame per declared output (all built before any is sent).

    Each output is inlined when it fits ``policy.inline_limit`` and written to
    ``policy.directory`` otherwise; raises :class:`RunFailure` (phase ``outputs``) when a
    value cannot be materialized or the result does not match the declared outputs.
    ``workdir`` takes the scratch files of models saved through a file.
    """
    try:
        named = spec.split_outputs(result)
    except ValueError as exc:
        raise RunFailure(str(exc), phase="outputs", error_type=type(exc).__name__) from None
    messages = []
    for name, value in named.items():
        try:
            kind, raw, media = materialize_value(
                name, value, workdir=workdir, allow_pickle=spec.allow_pickle
            )
        except Exception as exc:
            raise RunFailure(
                str(exc),
                phase="outputs",
                error_type=type(exc).__name__,
                details=[ErrorDetail(field=f"outputs.{name}", message=str(exc))],
                tb=traceback.format_exc(),
            ) from None
        digest = sha256_hex(raw)
        common: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "size": len(raw),
            "sha256": digest,
            "media_type": media,
        }
        if len(raw) <= policy.inline_limit:
            messages.append(OutputMessage(data=b64encode(raw), **common))
            continue
        if policy.directory is None:
            raise RunFailure(
                f"output '{name}' is {len(raw)} bytes, over the inline limit of "
                f"{policy.inline_limit}, and the start message names no output directory",
                phase="outputs",
                error_type="OutputError",
                details=[ErrorDetail(field=f"outputs.{name}", message="too large to inline")],
            )
        target = Path(policy.directory) / f"{name}.{kind}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
        messages.append(OutputMessage(path=str(target), **common))
    return messages
