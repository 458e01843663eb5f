"""Admission on a node: the policy's checks before a task's tool is loaded, and approvals.

Before anything of a task is loaded, :meth:`Admission.admit` checks its submitting
principal and flow, its tool (name, version, code hash) and the places its config names
against the node's policy (:mod:`flowfed.node.policy`), writes ``task.admitted`` or
``task.refused`` to the node's audit log, and in ``approval: manual`` mode waits until the
operator approves a new tool or principal (``flowfed node approve``).

A room of its own because it is the first gate of the trust boundary, taken before the
task's inputs, and its own audit trail.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flowfed.node.journal import NodeJournal
from flowfed.node.policy import NodePolicy, PolicyRefusal
from flowfed.node.task_failure import TaskFailure
from flowfed.runtime.remote import RemoteTask
from flowfed.tools.core import ToolSpec

log = logging.getLogger("flowfed.node")

#: How often a task waiting for the operator's approval looks again (seconds).
APPROVAL_POLL_S = 0.5


class Admission:
    """The admission rules of ``policy`` for node ``node``, recorded in ``journal``."""

    def __init__(self, policy: NodePolicy, journal: NodeJournal, node: str) -> None:
        self.policy = policy
        self.journal = journal
        self.node = node
        self._code_hashes: dict[int, str] = {}

    def code_hash(self, spec: ToolSpec) -> str:
        """The SHA-256 of ``spec``'s code, computed once per function."""
        from flowfed.artifacts.codehash import code_hash

        key = id(spec.fn)
        h = self._code_hashes.get(key)
        if h is None:
            h = self._code_hashes[key] = code_hash(spec.fn)
        return h

    def admit(self, task: RemoteTask, spec: ToolSpec, sink: Any, cancel: threading.Event) -> str:
        """Apply the policy's admission rules to ``task``; its tool's code hash.

        Raises :class:`TaskFailure` (``PolicyRefused``) naming the node and the rule; in
        manual approval mode, waits for ``flowfed node approve`` first.
        """
        policy = self.policy
        code = self.code_hash(spec)
        who = {
            "task_id": task.task_id,
            "run_id": task.run_id,
            "principal": task.principal,
            "flow": task.flow,
            "step": task.step,
            "tool": spec.name,
            "tool_version": spec.version,
            "code_hash": code,
            "inputs": input_hashes(task),
        }
        try:
            policy.check_principal(task.principal, task.flow)
            policy.check_tool(spec.name, spec.version, code, True)
            policy.check_data_access(spec.name, task.config)
        except PolicyRefusal as exc:
            self.journal.append(
                {"kind": "task.refused", **who, "rule": exc.rule, "reason": str(exc)}
            )
            raise TaskFailure(
                f"node '{self.node}' refused the task (policy rule {exc.rule}): {exc}",
                "PolicyRefused",
                public=True,
            ) from None
        waits: list[tuple[str, str, dict[str, Any]]] = []
        if policy.tools.approval == "manual":
            waits.append(("tool", f"{spec.name}@{spec.version}#{code}", who))
        if policy.principals.approval == "manual":
            waits.append(("principal", task.principal, who))
        for kind, key, details in waits:
            if self.journal.is_approved(kind, key):
                continue
            request = self.journal.request_approval(kind, key, details)
            message = (
                f"waiting for approval at node '{self.node}' (new {kind} "
                f"{key.split('#')[0]}): the operator runs `flowfed node approve {request}`"
            )
            log.warning("task %s: %s", task.task_id, message)
            sink("progress", {"fraction": 0.0, "message": message})
            sink("log", {"level": "warning", "message": message})
            deadline = None if task.timeout is None else time.monotonic() + task.timeout
            while not self.journal.is_approved(kind, key):
                if cancel.is_set():
                    raise TaskFailure(
                        "cancelled while waiting for approval", "Cancelled", public=True
                    )
                if deadline is not None and time.monotonic() >= deadline:
                    raise TaskFailure(
                        f"no approval at node '{self.node}' within the task's timeout "
                        f"({task.timeout:g}s): {message}",
                        "Timeout",
                        public=True,
                    )
                time.sleep(APPROVAL_POLL_S)
        self.journal.append({"kind": "task.admitted", **who})
        return code


def input_hashes(task: RemoteTask) -> dict[str, Any]:
    """Each input of ``task`` by name: its hash, or the list of hashes."""
    return {
        name: [i.hash for i in v] if isinstance(v, list) else v.hash
        for name, v in task.inputs.items()
    }
