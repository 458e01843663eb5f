"""A tool call's files: inputs written for the tool, outputs read back, its stderr's tail.

JSON-able inputs travel inline; anything else is materialized into the call's private
work directory and passed by path with its kind (:func:`wire_inputs`). Output frames are
decoded with the artifact materializers (:func:`decode_output`), and a path the tool
names is read only if it is a regular file inside the call's output folder
(:func:`read_output`): this process may read much more of the host than the tool.
:func:`stderr_tail` reads the end of the tool's log without following links. A room of
its own: every place where the platform touches a file the tool could have written.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any

from flowfed.artifacts import ArtifactHandle, load, materialize
from flowfed.executors.processes import ProcessTaskError
from flowfed.runtime.protocol import InlineInput, OutputMessage, PathInput, sha256_hex

__all__ = ["FROM_WIRE", "TO_WIRE", "decode_output", "read_output", "stderr_tail", "wire_inputs"]

# artifact materializer kind → protocol kind (and back for outputs).
TO_WIRE = {
    "json": "json",
    "bytes": "bytes",
    "numpy": "npy",
    "pandas": "pandas",
    "file": "file",
    "model": "model",
    "pickle": "pickle",
}
FROM_WIRE = {wire: kind for kind, wire in TO_WIRE.items()}


def wire_inputs(args: dict[str, Any], workdir: Path) -> dict[str, InlineInput | PathInput]:
    """JSON values inline; everything else materialized into ``workdir`` and passed by path."""
    out: dict[str, InlineInput | PathInput] = {}
    for name, value in args.items():
        if isinstance(value, ArtifactHandle):
            value = value.load()  # a lazy artifact handle: the subprocess needs the value
        m = materialize(value)
        if m.kind == "json":
            out[name] = InlineInput(value=value, kind="json")
            continue
        folder = workdir / "inputs" / name
        folder.mkdir(parents=True, exist_ok=True)
        fname = str(m.meta.get("filename") or f"{name}.{TO_WIRE[m.kind]}")
        target = folder / os.path.basename(fname)
        target.write_bytes(m.data)
        out[name] = PathInput(
            path=str(target),
            kind=TO_WIRE[m.kind],
            sha256=f"sha256:{m.hash}",
        )
    return out


def decode_output(msg: OutputMessage, outputs: Path | None = None) -> Any:
    """An output frame's value. A ``path`` must name a regular file inside ``outputs``
    (the call's output folder): this process may be able to read much more of the host
    than the tool, which must not make it read anything else on the tool's word."""
    if msg.data is not None:
        raw = msg.content()
    elif msg.path is not None:
        raw = read_output(msg.name, Path(msg.path), outputs)
        if sha256_hex(raw) != msg.sha256:
            raise ProcessTaskError(
                f"output '{msg.name}': {msg.path} does not match {msg.sha256}",
                etype="OutputError",
            )
    else:
        raise ProcessTaskError(
            f"output '{msg.name}' has neither data nor path", etype="OutputError"
        )
    if msg.kind == "text":
        return raw.decode("utf-8")
    meta = {"filename": Path(msg.path).name if msg.path else msg.name}
    return load(FROM_WIRE[msg.kind], raw, meta)


def read_output(name: str, path: Path, outputs: Path | None) -> bytes:
    """The bytes of output ``name`` at ``path``; with ``outputs``, only a regular file
    inside that folder (links resolved first). Raises ProcessTaskError (OutputError)."""
    if outputs is not None:
        real = path.resolve()
        if not real.is_relative_to(outputs.resolve()) or not real.is_file():
            raise ProcessTaskError(
                f"output '{name}': {path} is not a file in the call's output folder {outputs}",
                etype="OutputError",
            )
        path = real
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ProcessTaskError(
            f"output '{name}': cannot read {path}: {exc.strerror or exc}", etype="OutputError"
        ) from None


def stderr_tail(path: Path, limit: int = 2000) -> str:
    """The last ``limit`` characters of the log at ``path``, after a newline ("" if none).

    >>> stderr_tail(Path("/nonexistent/stderr.log"))
    ''
    """
    # O_NOFOLLOW: the log sits in a folder the tool can write, and it could be a link to
    # a file only this process may read.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return ""
            f.seek(max(0, st.st_size - 4 * limit))
            text = f.read().decode(errors="replace").strip()
        if text:
            return "\n" + text[-limit:]
    return ""
