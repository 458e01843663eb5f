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

This module holds :class:`NodeJournal`, the one object the agent and the CLI open, with the
task logs and error reports; the audit chain is :mod:`flowfed.node.audit_log`, the
approvals :mod:`flowfed.node.approvals`, the careful file operations
:mod:`flowfed.node.journal_io`.

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

import json
import re
import secrets
import threading
from pathlib import Path
from typing import Any

from flowfed.node.approvals import APPROVALS_FILE, Approvals
from flowfed.node.audit_log import GENESIS, AuditLog, entry_hash
from flowfed.node.journal_io import (
    JournalError,
    append_line,
    make_private_dir,
    now,
    read_jsonl,
)

__all__ = [
    "GENESIS",
    "JournalError",
    "NodeJournal",
    "entry_hash",
    "valid_task_id",
]

AUDIT_FILE = "audit.jsonl"
ERRORS_FILE = "errors.jsonl"
LOGS_DIR = "logs"

# A task id names a file under logs/: no separators, no leading dot, so that an id sent by
# a hostile server cannot reach outside the folder.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ERROR_ID = re.compile(r"err-[0-9a-f]{12}")
_LEVELS = ("debug", "info", "warning", "error")


def valid_task_id(task_id: str) -> bool:
    """Whether ``task_id`` is safe as a file name under ``logs/``.

    Example:
        >>> valid_task_id("3f2a9c"), valid_task_id("../etc/passwd"), valid_task_id(".x")
        (True, False, False)
    """
    return isinstance(task_id, str) and _TASK_ID.fullmatch(task_id) is not None


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
        make_private_dir(self.work_dir)
        self.audit_path = self.work_dir / AUDIT_FILE
        self.errors_path = self.work_dir / ERRORS_FILE
        self.approvals_path = self.work_dir / APPROVALS_FILE
        self.logs_dir = self.work_dir / LOGS_DIR
        # One re-entrant lock for all: an approval appends to the audit log under it.
        self._lock = threading.RLock()
        self._audit = AuditLog(self.audit_path, self._lock)
        self._approvals = Approvals(self.work_dir, self._lock, self._audit)

    # -- audit log (flowfed.node.audit_log) ---------------------------------------------

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append ``event`` to the audit log; the entry (:meth:`AuditLog.append`).

        Raises:
            JournalError: ``event`` has no ``kind`` or is not JSON.
        """
        return self._audit.append(event)

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last audit entry (:meth:`AuditLog.head`)."""
        return self._audit.head()

    def entries(self) -> list[dict[str, Any]]:
        """Every well-formed audit entry, oldest first (:meth:`AuditLog.entries`)."""
        return self._audit.entries()

    def verify(self) -> list[str]:
        """Every problem of the audit chain, each naming its line (:meth:`AuditLog.verify`)."""
        return self._audit.verify()

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
            "ts": now(),
            "level": level if level in _LEVELS else "info",
            "message": str(message),
        }
        if run_id is not None:
            line["run_id"] = run_id
        if step is not None:
            line["step"] = step
        data = json.dumps(line, default=str).encode() + b"\n"
        with self._lock:
            make_private_dir(self.logs_dir)
            # No fsync: a tool may log thousands of lines, and logs are a diagnosis, not
            # the evidence (that is the audit log, which is synced).
            append_line(path, data, sync=False)

    def logs(self, task_id: str) -> list[dict[str, Any]]:
        """The log lines of task ``task_id`` (``ts``, ``level``, ``message``; ``[]`` if none).

        Raises:
            JournalError: ``task_id`` is not a safe file name.
        """
        return read_jsonl(self._log_path(task_id))

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
            "ts": now(),
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
            append_line(self.errors_path, data, sync=True)
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
            for r in read_jsonl(self.errors_path)
        ]

    def get_error(self, error_id: str) -> dict[str, Any] | None:
        """The full report kept under ``error_id``, or ``None``."""
        if not isinstance(error_id, str) or not _ERROR_ID.fullmatch(error_id):
            return None
        for record in read_jsonl(self.errors_path):
            if record.get("id") == error_id:
                return record
        return None

    # -- approvals (flowfed.node.approvals) ---------------------------------------------

    def request_approval(self, kind: str, key: str, details: dict[str, Any]) -> str:
        """Ask the operator to approve a new tool or principal; the request id
        (:meth:`Approvals.request_approval`)."""
        return self._approvals.request_approval(kind, key, details)

    def is_approved(self, kind: str, key: str) -> bool:
        """Whether ``kind``/``key`` was approved, by this process or another (the CLI)."""
        return self._approvals.is_approved(kind, key)

    def pending(self) -> list[dict[str, Any]]:
        """The requests still waiting, oldest first."""
        return self._approvals.pending()

    def approved(self) -> list[dict[str, Any]]:
        """The requests approved, in the order they were asked."""
        return self._approvals.approved()

    def approve(self, request_id_or_key: str, *, by: str = "operator") -> dict[str, Any]:
        """Approve a request by its id or its key (:meth:`Approvals.approve`).

        Raises:
            JournalError: no such request, or a key that names two.
        """
        return self._approvals.approve(request_id_or_key, by=by)

    def approve_all(self, *, by: str = "operator") -> list[dict[str, Any]]:
        """Approve every pending request; those approved."""
        return self._approvals.approve_all(by=by)
