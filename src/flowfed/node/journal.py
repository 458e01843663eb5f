"""The node's own journal: a hash-chained audit log, task logs, errors and approvals.

A data node is sovereign: it decides what runs and what leaves, and it keeps its own record
of both. Everything here lives in the node's ``--work-dir`` and never leaves the node unless
the node's policy shares it:

| file | what |
|---|---|
| ``audit.jsonl`` | append-only, hash-chained audit log (:meth:`NodeJournal.append`) |
| ``logs/<task_id>.jsonl`` | the logs each task wrote (:meth:`NodeJournal.log`) |
| ``errors.jsonl`` | full error reports with traceback and context (:meth:`NodeJournal.error`) |
| ``approvals.json`` | manual approvals of new tools and principals (:meth:`NodeJournal.approve`) |

Files are created mode 0600, folders 0700. Several threads (the agent's tasks) and several
processes (the agent and ``flowfed node approve``) may write at once: a thread lock plus an
``flock`` keep each file consistent, and the audit log re-reads its tail under the lock when
another process appended since.

Each audit line is ``{"seq", "ts", "prev", "event", "hash"}``: ``seq`` counts from 1, ``ts``
is ISO-8601 UTC, ``prev`` is the hash of the line before (64 zeros for the first) and
``hash`` is the SHA-256 of the canonical JSON of ``seq``, ``ts``, ``prev`` and ``event``
(:func:`entry_hash`). Changing, removing, reordering or cutting a line breaks the chain, and
:meth:`NodeJournal.verify` names the line. Events the agent writes (each has a ``kind``):

- ``node.started``: node, policy (its SHA-256), runner, datasets (name → hash)
- ``task.admitted`` / ``task.refused``: principal, flow, run_id, task_id, step, tool,
  tool_version, code_hash, inputs (name → hash); ``rule`` and ``reason`` when refused
- ``egress.released``: task_id, run_id, output, kind, hash, size, rows (the node's rows the
  output covers), category, suppressed_cells
- ``egress.refused``: task_id, run_id, output, kind, hash, rule, reason
- ``task.finished``: task_id, run_id, outputs (name → hash); ``task.failed``: task_id,
  run_id, error_id (the node-local error, :meth:`NodeJournal.get_error`), type
- ``approval.requested``: request_id, for (``tool`` or ``principal``), key, details;
  ``approval.granted``: request_id, for, key, by

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> j = NodeJournal(Path(tempfile.mkdtemp()) / "node")
    >>> first = j.append({"kind": "node.started", "node": "hospital-a", "policy": "ab12"})
    >>> first["seq"], first["prev"] == "0" * 64
    (1, True)
    >>> second = j.append({"kind": "task.finished", "task_id": "t1", "outputs": {}})
    >>> second["prev"] == first["hash"], j.verify()
    (True, [])
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "GENESIS",
    "JournalError",
    "NodeJournal",
    "entry_hash",
    "valid_task_id",
]

GENESIS = "0" * 64
"""The ``prev`` of the first audit entry."""

AUDIT_FILE = "audit.jsonl"
ERRORS_FILE = "errors.jsonl"
APPROVALS_FILE = "approvals.json"
LOGS_DIR = "logs"
# approvals.json is replaced, never appended, so its lock lives in a file of its own.
_APPROVALS_LOCK = ".approvals.lock"

# A task id names a file under logs/: no separators, no leading dot, so that an id sent by
# a hostile server cannot reach outside the folder.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ERROR_ID = re.compile(r"err-[0-9a-f]{12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LEVELS = ("debug", "info", "warning", "error")
_APPROVAL_KINDS = ("tool", "principal")


class JournalError(Exception):
    """A journal operation that cannot be done; the message names the file or the id."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical(obj: Any) -> bytes:
    # Sorted keys, no spaces, ASCII only, no NaN: one byte string per value, so anyone can
    # recompute a hash with any JSON library that can do the same.
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def entry_hash(seq: int, ts: str, prev: str, event: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of an audit entry's ``seq``, ``ts``, ``prev``, ``event``.

    Canonical: keys sorted, separators ``,`` and ``:`` without spaces, non-ASCII escaped.

    Example:
        >>> entry_hash(1, "2024-01-01T00:00:00.000000Z", GENESIS, {"kind": "x"})[:16]
        '8bb1d5445440a599'
    """
    body = {"seq": seq, "ts": ts, "prev": prev, "event": event}
    return hashlib.sha256(_canonical(body)).hexdigest()


def valid_task_id(task_id: str) -> bool:
    """Whether ``task_id`` is safe as a file name under ``logs/``.

    Example:
        >>> valid_task_id("3f2a9c"), valid_task_id("../etc/passwd"), valid_task_id(".x")
        (True, False, False)
    """
    return isinstance(task_id, str) and _TASK_ID.fullmatch(task_id) is not None


def _mkdir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _append_line(path: Path, data: bytes, *, sync: bool) -> None:
    """Append ``data`` with one write under an exclusive ``flock``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the flock


def _write_atomic(path: Path, data: bytes) -> None:
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


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
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


def _tail(fd: int, size: int) -> tuple[int, str] | None:
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


class NodeJournal:
    """The node's audit log, task logs, error reports and approvals, under ``work_dir``.

    Thread-safe, and safe to share between processes (the agent and the operator's CLI).
    Opening an existing folder continues its chain.

    Args:
        work_dir: the node's ``--work-dir``; created (mode 0700) if missing.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> j = NodeJournal(Path(tempfile.mkdtemp()))
        >>> j.log("t1", "info", "read 569 rows")
        >>> [e["message"] for e in j.logs("t1")]
        ['read 569 rows']
        >>> eid = j.error("t1", {"message": "boom\\nmore", "type": "RuntimeError",
        ...                      "traceback": "Traceback ...", "context": {"step": "train"}})
        >>> j.errors()[-1]["message"], j.get_error(eid)["traceback"]
        ('boom', 'Traceback ...')
        >>> rid = j.request_approval("principal", "alice", {"flow": "breast"})
        >>> j.is_approved("principal", "alice"), [p["key"] for p in j.pending()]
        (False, ['alice'])
        >>> j.approve(rid, by="dr-who")["status"], j.is_approved("principal", "alice")
        ('approved', True)
        >>> [e["event"]["kind"] for e in j.entries()]
        ['approval.requested', 'approval.granted']
    """

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)
        _mkdir(self.work_dir)
        self.audit_path = self.work_dir / AUDIT_FILE
        self.errors_path = self.work_dir / ERRORS_FILE
        self.approvals_path = self.work_dir / APPROVALS_FILE
        self.logs_dir = self.work_dir / LOGS_DIR
        self._lock = threading.RLock()
        # The chain's tail as this process last saw it, and the file size it was seen at:
        # a different size under the flock means another process appended.
        self._seq = 0
        self._hash = GENESIS
        self._size = -1
        self._approvals_stat: tuple[int, int, int, int] | None = None
        self._approvals_cache: list[dict[str, Any]] = []

    # -- audit log ----------------------------------------------------------------------

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append ``event`` to the audit log, chained to the entry before; returns the entry.

        ``event`` is any JSON object with a string ``kind``. The line is written with one
        ``O_APPEND`` write and ``fsync``-ed before this returns.

        Raises:
            JournalError: ``event`` has no ``kind`` or is not JSON (NaN, sets, objects...).

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> j = NodeJournal(Path(tempfile.mkdtemp()))
            >>> e = j.append({"kind": "task.failed", "task_id": "t1", "error_id": "err-0"})
            >>> sorted(e), e["seq"]
            (['event', 'hash', 'prev', 'seq', 'ts'], 1)
        """
        if not isinstance(event, dict) or not isinstance(event.get("kind"), str):
            raise JournalError(f"an audit event needs a string 'kind', got {event!r:.200}")
        try:
            # A copy as JSON gives it back: what is hashed is exactly what is stored.
            event = json.loads(_canonical(event))
        except (TypeError, ValueError) as exc:
            raise JournalError(
                f"audit event '{event['kind']}' is not JSON ({exc}); nothing was written"
            ) from None
        with self._lock:
            fd = os.open(self.audit_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size != self._size:
                    tail = _tail(fd, size)
                    self._seq, self._hash = tail if tail else (0, GENESIS)
                # A crash mid-write can leave a last line without its newline: end it, so
                # the cut line stays visible to verify() and this entry starts a line.
                lead = b""
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    lead = b"\n"
                seq, ts, prev = self._seq + 1, _now(), self._hash
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
                fd = os.open(self.audit_path, os.O_RDONLY)
            except FileNotFoundError:
                return 0, GENESIS
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                tail = _tail(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        return tail if tail else (0, GENESIS)

    def entries(self) -> list[dict[str, Any]]:
        """Every well-formed audit entry, oldest first (other lines are skipped: verify names
        them)."""
        return [e for e in _read_jsonl(self.audit_path) if _shape_problem(e) is None]

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
            >>> j = NodeJournal(Path(tempfile.mkdtemp()))
            >>> for i in range(3):
            ...     _ = j.append({"kind": "test", "i": i})
            >>> lines = j.audit_path.read_text().splitlines()
            >>> _ = j.audit_path.write_text(lines[0] + "\\n" + lines[2] + "\\n")
            >>> j.verify()  # doctest: +NORMALIZE_WHITESPACE
            ['line 2: seq 3, expected 2 (1 entry missing before it)',
             'line 2: broken link: prev is not the hash of line 1 (seq 1)']
        """
        try:
            raw = self.audit_path.read_bytes()
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
            shape = _shape_problem(entry)
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

    # -- task logs ----------------------------------------------------------------------

    def _log_path(self, task_id: str) -> Path:
        if not valid_task_id(task_id):
            raise JournalError(
                f"task id {task_id!r:.80} is not a safe name (1-128 letters, digits, '_', "
                "'.', '-', not starting with '.')"
            )
        return self.logs_dir / f"{task_id}.jsonl"

    def log(
        self,
        task_id: str,
        level: str,
        message: str,
        *,
        run_id: str | None = None,
        step: str | None = None,
    ) -> None:
        """Keep one log line of task ``task_id`` on the node (``logs/<task_id>.jsonl``).

        ``level`` is debug, info, warning or error (anything else is kept as info).

        Raises:
            JournalError: ``task_id`` is not a safe file name.
        """
        path = self._log_path(task_id)
        line: dict[str, Any] = {
            "ts": _now(),
            "level": level if level in _LEVELS else "info",
            "message": str(message),
        }
        if run_id is not None:
            line["run_id"] = run_id
        if step is not None:
            line["step"] = step
        data = json.dumps(line, default=str).encode() + b"\n"
        with self._lock:
            _mkdir(self.logs_dir)
            # No fsync: a tool may log thousands of lines, and logs are a diagnosis, not
            # the evidence (that is the audit log, which is synced).
            _append_line(path, data, sync=False)

    def logs(self, task_id: str) -> list[dict[str, Any]]:
        """The log lines of task ``task_id`` (``ts``, ``level``, ``message``; ``[]`` if none).

        Raises:
            JournalError: ``task_id`` is not a safe file name.
        """
        return _read_jsonl(self._log_path(task_id))

    def has_logs(self, task_id: str) -> bool:
        """Whether the node kept any log of task ``task_id``."""
        return self._log_path(task_id).exists()

    # -- errors -------------------------------------------------------------------------

    def error(self, task_id: str, report: dict[str, Any]) -> str:
        """Keep a full error report (message, type, traceback, context); its new id.

        The id (``err-`` and 12 hex digits) is what may leave the node in place of the
        message; the operator reads the rest with ``flowfed node errors ID``.
        """
        error_id = f"err-{secrets.token_hex(6)}"
        record: dict[str, Any] = {
            "id": error_id,
            "ts": _now(),
            "task_id": str(task_id),
            "type": str(report.get("type") or "Error"),
            "message": str(report.get("message") or ""),
            "traceback": report.get("traceback"),
            "context": report.get("context") or {},
        }
        for key, value in report.items():
            record.setdefault(key, value)
        # default=str: an error must be kept even when its context holds odd objects.
        data = json.dumps(record, default=str).encode() + b"\n"
        with self._lock:
            _append_line(self.errors_path, data, sync=True)
        return error_id

    def errors(self) -> list[dict[str, Any]]:
        """Every kept error, newest last: ``id``, ``ts``, ``task_id``, ``type`` and the
        first line of ``message``."""
        return [
            {
                "id": r.get("id"),
                "ts": r.get("ts"),
                "task_id": r.get("task_id"),
                "type": r.get("type"),
                "message": str(r.get("message") or "").split("\n", 1)[0],
            }
            for r in _read_jsonl(self.errors_path)
        ]

    def get_error(self, error_id: str) -> dict[str, Any] | None:
        """The full report kept under ``error_id``, or ``None``."""
        if not isinstance(error_id, str) or not _ERROR_ID.fullmatch(error_id):
            return None
        for record in _read_jsonl(self.errors_path):
            if record.get("id") == error_id:
                return record
        return None

    # -- approvals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _approvals_locked(self) -> Iterator[None]:
        with self._lock:
            fd = os.open(self.work_dir / _APPROVALS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _read_approvals(self) -> list[dict[str, Any]]:
        try:
            st = self.approvals_path.stat()
        except FileNotFoundError:
            return []
        # The agent polls this while a task waits: parse only when the file was replaced.
        key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        with self._lock:
            if key == self._approvals_stat:
                return [dict(r) for r in self._approvals_cache]
        try:
            data = json.loads(self.approvals_path.read_bytes())
            requests = data["requests"]
            if not isinstance(requests, list):
                raise TypeError("'requests' is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalError(f"{self.approvals_path} is not an approvals file: {exc}") from None
        except FileNotFoundError:
            return []
        with self._lock:
            self._approvals_stat, self._approvals_cache = key, requests
        return [dict(r) for r in requests]

    def _write_approvals(self, requests: list[dict[str, Any]]) -> None:
        data = json.dumps({"requests": requests}, indent=2, default=str).encode() + b"\n"
        _write_atomic(self.approvals_path, data)

    def request_approval(self, kind: str, key: str, details: dict[str, Any]) -> str:
        """Ask the operator to approve a new tool or principal; the request id.

        ``kind`` is ``tool`` (key ``name@version#code_hash``) or ``principal`` (key: the
        user's name). Asking again for the same kind and key returns the same id (pending
        or approved) and writes nothing; a new request is also an ``approval.requested``
        audit entry.

        Raises:
            JournalError: an unknown ``kind``.
        """
        if kind not in _APPROVAL_KINDS:
            raise JournalError(f"approval kind must be 'tool' or 'principal', not {kind!r}")
        with self._approvals_locked():
            requests = self._read_approvals()
            for r in requests:
                if r.get("kind") == kind and r.get("key") == key:
                    return str(r["id"])
            request = {
                "id": f"apr-{secrets.token_hex(6)}",
                "kind": kind,
                "key": key,
                "details": details,
                "status": "pending",
                "requested": _now(),
                "approved": None,
                "by": None,
            }
            self._write_approvals([*requests, request])
            self.append(
                {
                    "kind": "approval.requested",
                    "request_id": request["id"],
                    "for": kind,
                    "key": key,
                    "details": details,
                }
            )
        return str(request["id"])

    def is_approved(self, kind: str, key: str) -> bool:
        """Whether ``kind``/``key`` was approved, by this process or another (the CLI)."""
        return any(
            r.get("kind") == kind and r.get("key") == key and r.get("status") == "approved"
            for r in self._read_approvals()
        )

    def pending(self) -> list[dict[str, Any]]:
        """The requests still waiting, oldest first."""
        return [r for r in self._read_approvals() if r.get("status") == "pending"]

    def approved(self) -> list[dict[str, Any]]:
        """The requests approved, in the order they were asked."""
        return [r for r in self._read_approvals() if r.get("status") == "approved"]

    def approve(self, request_id_or_key: str, *, by: str = "operator") -> dict[str, Any]:
        """Approve a request by its id (``apr-...``) or its key; the request as it now is.

        Approving twice changes nothing. The grant is an ``approval.granted`` audit entry.

        Raises:
            JournalError: no such request, or a key that names two (a tool and a principal).
        """
        with self._approvals_locked():
            return self._approve_locked(request_id_or_key, by)

    def _approve_locked(self, request_id_or_key: str, by: str) -> dict[str, Any]:
        requests = self._read_approvals()
        found = [r for r in requests if r.get("id") == request_id_or_key]
        if not found:
            found = [r for r in requests if r.get("key") == request_id_or_key]
        if not found:
            raise JournalError(
                f"no approval request {request_id_or_key!r} in {self.approvals_path} "
                "(see `flowfed node approvals`)"
            )
        if len(found) > 1:
            raise JournalError(
                f"{request_id_or_key!r} is the key of {len(found)} requests; approve "
                "by id: " + ", ".join(str(r["id"]) for r in found)
            )
        request = found[0]
        if request.get("status") == "approved":
            return request
        request.update(status="approved", approved=_now(), by=by)
        self._write_approvals(requests)
        self.append(
            {
                "kind": "approval.granted",
                "request_id": request["id"],
                "for": request["kind"],
                "key": request["key"],
                "by": by,
            }
        )
        return request

    def approve_all(self, *, by: str = "operator") -> list[dict[str, Any]]:
        """Approve every pending request; those approved."""
        # One lock for all: flock on a second descriptor would wait on our own lock.
        with self._approvals_locked():
            return [self._approve_locked(str(r["id"]), by) for r in self.pending()]


def _shape_problem(entry: Any) -> str | None:
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
