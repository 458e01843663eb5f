"""The file primitives of a node's journal: locked appends, atomic replaces, tolerant reads.

:class:`~flowfed.node.journal.NodeJournal` keeps its audit log, task logs, error reports
and approvals as plain files that the agent's threads and the operator's CLI write at
once. The few ways it touches them live here, each safe for that: an ``O_APPEND`` write
under an exclusive ``flock``, a replace through a temporary file and ``os.replace``, and
a line-by-line read that skips a line a crash cut short. Also the journal's timestamp,
its canonical JSON (what the audit chain hashes) and :class:`JournalError`.

A room of its own so that the audit chain (:mod:`flowfed.node.audit_log`), the approvals
(:mod:`flowfed.node.approvals`) and the journal itself share one careful implementation.

Example:
    >>> canonical_json({"b": 1, "a": [1.5, None]})
    b'{"a":[1.5,null],"b":1}'
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class JournalError(Exception):
    """A journal operation that cannot be done; the message names the file or the id."""


def now() -> str:
    """The current UTC time as the journal writes it (ISO-8601, microseconds, ``Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(obj: Any) -> bytes:
    """``obj`` as canonical JSON bytes (sorted keys, no spaces, ASCII only, no NaN)."""
    # One byte string per value, so anyone can recompute a hash with any JSON library
    # that can do the same.
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) mode 0700 if missing."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def append_line(path: Path, data: bytes, *, sync: bool) -> None:
    """Append ``data`` to ``path`` (mode 0600) with one write under an exclusive ``flock``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the flock


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600) so that no reader sees half of it."""
    # A reader (the agent polling is_approved) sees the old file or the new one, never half.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The parseable object lines of ``path`` (none if it does not exist)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    found: list[dict[str, Any]] = []
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash; the rest still reads
        if isinstance(obj, dict):
            found.append(obj)
    return found
