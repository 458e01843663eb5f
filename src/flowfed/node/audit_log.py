"""The node's audit log: one hash-chained JSON line per event, appended and verified.

Each line is ``{"seq", "ts", "prev", "event", "hash"}``: ``seq`` counts from 1, ``ts`` is
ISO-8601 UTC, ``prev`` is the hash of the line before (:data:`GENESIS` for the first) and
``hash`` is the SHA-256 of the canonical JSON of ``seq``, ``ts``, ``prev`` and ``event``
(:func:`entry_hash`). Changing, removing, reordering or cutting a line breaks the chain,
and :meth:`AuditLog.verify` names the line. Several processes may append at once: under
the ``flock`` the log re-reads its tail when another process appended since.

A room of its own because it is the node's evidence: the chain's format and its checks
are one algorithm, which :class:`~flowfed.node.journal.NodeJournal` (the file's owner, with
the node's task logs, errors and approvals) and the approvals use through it.

Example:
    >>> import tempfile, threading
    >>> from pathlib import Path
    >>> log = AuditLog(Path(tempfile.mkdtemp()) / "audit.jsonl", threading.RLock())
    >>> first = log.append({"kind": "node.started", "node": "hospital-a"})
    >>> first["seq"], first["prev"] == GENESIS, log.head() == (1, first["hash"])
    (1, True, True)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from flowfed.node.journal_io import JournalError, canonical_json, now, read_jsonl

GENESIS = "0" * 64
"""The ``prev`` of the first audit entry."""

_HEX64 = re.compile(r"[0-9a-f]{64}")


def entry_hash(seq: int, ts: str, prev: str, event: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of an audit entry's ``seq``, ``ts``, ``prev``, ``event``.

    Canonical: keys sorted, separators ``,`` and ``:`` without spaces, non-ASCII escaped.

    Example:
        >>> entry_hash(1, "2024-01-01T00:00:00.000000Z", GENESIS, {"kind": "x"})[:16]
        '8bb1d5445440a599'
    """
    body = {"seq": seq, "ts": ts, "prev": prev, "event": event}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def chain_tail(fd: int, size: int) -> tuple[int, str] | None:
    """``(seq, hash)`` of the last well-formed entry in the first ``size`` bytes of ``fd``.

    Reads backwards in growing chunks, so a long log opens as fast as a short one.
    """
    chunk = 64 * 1024
    while True:
        start = max(0, size - chunk)
        data = os.pread(fd, size - start, start)
        lines = data.split(b"\n")
        if start > 0:
            lines = lines[1:]  # the first piece may be the end of a longer line
        for line in reversed(lines):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # a truncated last line: chain on from the entry before it
            if (
                isinstance(obj, dict)
                and isinstance(obj.get("seq"), int)
                and isinstance(obj.get("hash"), str)
            ):
                return obj["seq"], obj["hash"]
        if start == 0:
            return None
        chunk *= 4


class AuditLog:
    """The hash-chained audit log in ``path``; ``lock`` guards it within this process.

    Opening an existing file continues its chain. The lock is the journal's own (a
    re-entrant lock), so that the approvals can append while they hold it.
    """

    def __init__(self, path: Path, lock: threading.RLock | None = None) -> None:
        self.path = path
        self._lock = lock if lock is not None else threading.RLock()
        # The chain's tail as this process last saw it, and the file size it was seen at:
        # a different size under the flock means another process appended.
        self._seq = 0
        self._hash = GENESIS
        self._size = -1

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append ``event`` to the audit log, chained to the entry before; returns the entry.

        ``event`` is any JSON object with a string ``kind``. The line is written with one
        ``O_APPEND`` write and ``fsync``-ed before this returns.

        Raises:
            JournalError: ``event`` has no ``kind`` or is not JSON (NaN, sets, objects...).

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> j = AuditLog(Path(tempfile.mkdtemp()) / "audit.jsonl")
            >>> e = j.append({"kind": "task.failed", "task_id": "t1", "error_id": "err-0"})
            >>> sorted(e), e["seq"]
            (['event', 'hash', 'prev', 'seq', 'ts'], 1)
        """
        if not isinstance(event, dict) or not isinstance(event.get("kind"), str):
            raise JournalError(f"an audit event needs a string 'kind', got {event!r:.200}")
        try:
            # A copy as JSON gives it back: what is hashed is exactly what is stored.
            event = json.loads(canonical_json(event))
        except (TypeError, ValueError) as exc:
            raise JournalError(
                f"audit event '{event['kind']}' is not JSON ({exc}); nothing was written"
            ) from None
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size != self._size:
                    tail = chain_tail(fd, size)
                    self._seq, self._hash = tail if tail else (0, GENESIS)
                # A crash mid-write can leave a last line without its newline: end it, so
                # the cut line stays visible to verify() and this entry starts a line.
                lead = b""
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    lead = b"\n"
                seq, ts, prev = self._seq + 1, now(), self._hash
                digest = entry_hash(seq, ts, prev, event)
                entry: dict[str, Any] = {
                    "seq": seq,
                    "ts": ts,
                    "prev": prev,
                    "event": event,
                    "hash": digest,
                }
                data = lead + json.dumps(entry, separators=(",", ":")).encode() + b"\n"
                os.write(fd, data)
                os.fsync(fd)
                self._seq, self._hash, self._size = seq, digest, size + len(data)
            finally:
                os.close(fd)
        return entry

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last entry (``(0, GENESIS)`` for an empty log).

        Removing the last lines of a log leaves a shorter chain that still holds; comparing
        the head with a hash kept elsewhere (results carry it to the server) shows that.
        """
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return 0, GENESIS
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                tail = chain_tail(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        return tail if tail else (0, GENESIS)

    def entries(self) -> list[dict[str, Any]]:
        """Every well-formed audit entry, oldest first (other lines are skipped: verify names
        them)."""
        return [e for e in read_jsonl(self.path) if entry_problem(e) is None]

    def verify(self) -> list[str]:
        """Check the whole chain; every problem found, each naming its line (1-based).

        Finds an edited entry (its hash does not match), a broken link (``prev`` is not the
        hash of the line before), a missing, duplicated or out-of-order ``seq``, a line that
        is not an entry, and a truncated last line. After a problem the check goes on from
        the line as it stands, so one deleted line is reported once, not at every line after.
        An empty list means the chain holds.

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> j = AuditLog(Path(tempfile.mkdtemp()) / "audit.jsonl")
            >>> for i in range(3):
            ...     _ = j.append({"kind": "test", "i": i})
            >>> lines = j.path.read_text().splitlines()
            >>> _ = j.path.write_text(lines[0] + "\\n" + lines[2] + "\\n")
            >>> j.verify()  # doctest: +NORMALIZE_WHITESPACE
            ['line 2: seq 3, expected 2 (1 entry missing before it)',
             'line 2: broken link: prev is not the hash of line 1 (seq 1)']
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        problems: list[str] = []
        lines = raw.split(b"\n")
        cut = lines[-1] != b""  # the file does not end with a newline
        if not cut:
            lines.pop()
        expect_seq, prev_hash, prev_where = 1, GENESIS, "the start"
        seen: dict[int, int] = {}
        # After a line that cannot be read, the next entry may follow it (the line was an
        # entry: one seq further, a link nobody can check) or the entry before it (a cut
        # write the node chained past on restart). The unreadable line is reported already.
        unreadable = False
        for number, line in enumerate(lines, 1):
            last = number == len(lines)
            try:
                entry = json.loads(line)
            except ValueError:
                if last and cut:
                    problems.append(f"line {number}: truncated last line (an interrupted write)")
                elif not line.strip():
                    problems.append(f"line {number}: empty line")
                else:
                    problems.append(f"line {number}: not valid JSON")
                unreadable = True
                continue
            shape = entry_problem(entry)
            if shape:
                problems.append(f"line {number}: not an audit entry ({shape})")
                unreadable = True
                continue
            seq, stored = entry["seq"], entry["hash"]
            if seq in seen:
                problems.append(f"line {number}: seq {seq} duplicates line {seen[seq]}")
            elif seq > expect_seq + unreadable:
                gap = seq - expect_seq
                problems.append(
                    f"line {number}: seq {seq}, expected {expect_seq} "
                    f"({gap} {'entry' if gap == 1 else 'entries'} missing before it)"
                )
            elif seq < expect_seq:
                problems.append(f"line {number}: seq {seq}, expected {expect_seq} (out of order)")
            seen.setdefault(seq, number)
            if entry["prev"] != prev_hash and not unreadable:
                problems.append(f"line {number}: broken link: prev is not the hash of {prev_where}")
            try:
                actual = entry_hash(seq, entry["ts"], entry["prev"], entry["event"])
            except ValueError:
                actual = ""
            if actual != stored:
                problems.append(
                    f"line {number}: hash mismatch: the entry (seq {seq}) was changed "
                    "after it was written"
                )
            # Go on from this line as it stands: each problem is reported where it is.
            # (A seq that went back does not lower the next one expected: after a duplicate
            # or a swap, only the lines actually out of place are named.)
            expect_seq = max(expect_seq, seq + 1)
            prev_hash, prev_where = stored, f"line {number} (seq {seq})"
            unreadable = False
        return problems


def entry_problem(entry: Any) -> str | None:
    """What makes ``entry`` not an audit entry (a missing key, a wrong type), or ``None``."""
    if not isinstance(entry, dict):
        return "not an object"
    for key in ("seq", "ts", "prev", "event", "hash"):
        if key not in entry:
            return f"no '{key}'"
    if not isinstance(entry["seq"], int) or isinstance(entry["seq"], bool):
        return "'seq' is not an integer"
    if not isinstance(entry["ts"], str):
        return "'ts' is not a string"
    if not isinstance(entry["event"], dict):
        return "'event' is not an object"
    for key in ("prev", "hash"):
        if not isinstance(entry[key], str) or not _HEX64.fullmatch(entry[key]):
            return f"'{key}' is not a SHA-256 hex digest"
    return None
