"""Manual approvals on a node: new tools and principals wait until the operator says yes.

With ``approval: manual`` in the node's policy, a task whose tool (name, version, code
hash) or submitting principal the node has not seen approved waits; the agent files a
request here and polls :meth:`Approvals.is_approved` until ``flowfed node approve`` (another
process) grants it. Requests live in ``approvals.json``, replaced atomically under a lock
file of its own (``.approvals.lock``); each request and each grant is also an audit entry
(``approval.requested``, ``approval.granted``).

A room of its own because it is a small state machine over one file, shared between the
agent and the operator's CLI; :class:`~flowfed.node.journal.NodeJournal` exposes it.

Example:
    >>> import tempfile, threading
    >>> from pathlib import Path
    >>> from flowfed.node.audit_log import AuditLog
    >>> d, lock = Path(tempfile.mkdtemp()), threading.RLock()
    >>> a = Approvals(d, lock, AuditLog(d / "audit.jsonl", lock))
    >>> rid = a.request_approval("tool", "mylab.train@1#ab12", {})
    >>> a.is_approved("tool", "mylab.train@1#ab12"), a.approve(rid)["status"]
    (False, 'approved')
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flowfed.node.audit_log import AuditLog
from flowfed.node.journal_io import JournalError, now, write_atomic

#: What may be approved: a tool (key ``name@version#code_hash``) or a principal (a name).
APPROVAL_KINDS = ("tool", "principal")
APPROVALS_FILE = "approvals.json"
# approvals.json is replaced, never appended, so its lock lives in a file of its own.
APPROVALS_LOCK = ".approvals.lock"


class Approvals:
    """The approval requests in ``work_dir/approvals.json``, shared with other processes.

    ``lock`` is the journal's re-entrant lock and ``audit`` its audit log: a request and a
    grant are each written to both under the one lock.
    """

    def __init__(self, work_dir: Path, lock: threading.RLock, audit: AuditLog) -> None:
        self.path = work_dir / APPROVALS_FILE
        self.lock_path = work_dir / APPROVALS_LOCK
        self.audit = audit
        self._lock = lock
        self._approvals_stat: tuple[int, int, int, int] | None = None
        self._approvals_cache: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def _approvals_locked(self) -> Iterator[None]:
        with self._lock:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _read_approvals(self) -> list[dict[str, Any]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        # The agent polls this while a task waits: parse only when the file was replaced.
        key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        with self._lock:
            if key == self._approvals_stat:
                return [dict(r) for r in self._approvals_cache]
        try:
            data = json.loads(self.path.read_bytes())
            requests = data["requests"]
            if not isinstance(requests, list):
                raise TypeError("'requests' is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalError(f"{self.path} is not an approvals file: {exc}") from None
        except FileNotFoundError:
            return []
        with self._lock:
            self._approvals_stat, self._approvals_cache = key, requests
        return [dict(r) for r in requests]

    def _write_approvals(self, requests: list[dict[str, Any]]) -> None:
        data = json.dumps({"requests": requests}, indent=2, default=str).encode() + b"\n"
        write_atomic(self.path, data)

    def request_approval(self, kind: str, key: str, details: dict[str, Any]) -> str:
        """Ask the operator to approve a new tool or principal; the request id.

        ``kind`` is ``tool`` (key ``name@version#code_hash``) or ``principal`` (key: the
        user's name). Asking again for the same kind and key returns the same id (pending
        or approved) and writes nothing; a new request is also an ``approval.requested``
        audit entry.

        Raises:
            JournalError: an unknown ``kind``.
        """
        if kind not in APPROVAL_KINDS:
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
                "requested": now(),
                "approved": None,
                "by": None,
            }
            self._write_approvals([*requests, request])
            self.audit.append(
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
                f"no approval request {request_id_or_key!r} in {self.path} "
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
        request.update(status="approved", approved=now(), by=by)
        self._write_approvals(requests)
        self.audit.append(
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
