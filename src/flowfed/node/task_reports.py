"""What a task tells the server besides its outputs: filtered telemetry and error reports.

While a tool runs, :func:`guarded_sink` stands between it and the server: log lines stay
in the node's journal (the server sees their level unless the policy shares logs),
metrics leave only with a plain name and a finite value, progress only as numbers, and the
per-node facts of a secure-aggregation round stay inside the aggregate. When a task fails,
:func:`error_report` keeps the full report on the node and lets only its type, step, tool
and node leave (with the node-local error id), unless the policy shares errors.

A room of its own because these are the node's release filters for everything that is
not an output (outputs are :mod:`flowfed.node.egress`'s).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from flowfed.node.egress import error_type
from flowfed.node.journal import NodeJournal
from flowfed.node.policy import MAX_METRIC_NAMES, NodePolicy
from flowfed.node.task_failure import TaskFailure
from flowfed.runtime.remote import RemoteTask
from flowfed.runtime.usage import clean_counts, clean_figures

log = logging.getLogger("flowfed.node")


def error_report(
    task: RemoteTask,
    exc: TaskFailure,
    *,
    journal: NodeJournal,
    policy: NodePolicy,
    node: str,
    runner: str,
) -> dict[str, Any]:
    """The error as it leaves the node: by default its type, step, tool and node, and
    the node-local error id; the message and traceback stay here."""
    context = {
        "node": node,
        "task_id": task.task_id,
        "step": task.step,
        "tool": task.tool,
        "runner": runner,
    }
    full = {"message": str(exc), "type": exc.etype, "traceback": exc.tb, "context": context}
    error_id = journal.error(task.task_id, full)
    journal.append(
        {
            "kind": "task.failed",
            "task_id": task.task_id,
            "run_id": task.run_id,
            "error_id": error_id,
            "type": error_type(exc.etype),
        }
    )
    # A timeout or a cancellation is the platform's own word, whatever the tool did.
    if exc.public or exc.etype in ("Timeout", "Cancelled") or policy.share.errors:
        return {**full, "context": {**context, "error_id": error_id}}
    etype = error_type(exc.etype)
    return {
        "message": (
            f"{etype} in step '{task.step}', tool '{task.tool}', on node "
            f"'{node}': its message and traceback stay on the node "
            f"(the operator reads them with `flowfed node errors {error_id}`)"
        ),
        "type": etype,
        "traceback": None,
        "context": {**context, "error_id": error_id},
    }


def guarded_sink(
    task: RemoteTask, sink: Any, *, policy: NodePolicy, journal: NodeJournal, node: str
) -> Any:
    """The telemetry sink as the policy filters it: logs stay here (the server sees
    their level), metrics leave only with a plain name and a finite value, and per-node
    facts of a secure-aggregation round stay inside the aggregate."""
    name = node
    hide_facts = task.secure_aggregation and policy.secure_aggregation.release != "node"
    names: set[str] = set()

    def guarded(kind: str, payload: dict[str, Any]) -> None:
        if kind == "state":
            sink(kind, payload)
        elif kind == "log":
            level = str(payload.get("level", "info"))
            level = level if level in ("debug", "info", "warning", "error") else "info"
            message = str(payload.get("message", ""))
            journal.log(task.task_id, level, message, run_id=task.run_id, step=task.step)
            if not policy.share.logs:
                message = f"[{level} kept on node '{name}': `flowfed node logs {task.task_id}`]"
            sink("log", {"level": level, "message": message})
        elif kind == "metric":
            metric, value = payload.get("name"), payload.get("value")
            known = metric in names or len(names) < MAX_METRIC_NAMES
            if not known or not policy.metric_allowed(metric, value):
                log.warning(
                    "task %s: dropped a metric whose name or value may not leave the node",
                    task.task_id,
                )
                journal.log(
                    task.task_id,
                    "warning",
                    f"metric {metric!r} = {value!r} dropped by the node's policy "
                    "(names [A-Za-z0-9_.:-]{1,64}, finite numbers)",
                )
                return
            if hide_facts:
                journal.log(
                    task.task_id,
                    "info",
                    f"metric {metric} = {value} kept on the node (secure aggregation)",
                )
                return
            names.add(str(metric))
            step = payload.get("step")
            step = step if isinstance(step, int) and not isinstance(step, bool) else None
            sink("metric", {"name": metric, "value": float(value or 0), "step": step})
        elif kind == "progress":
            fraction = payload.get("fraction")
            out: dict[str, Any] = {}
            if isinstance(fraction, int | float) and not isinstance(fraction, bool):
                f = float(fraction)
                out = {"fraction": min(1.0, max(0.0, f))} if math.isfinite(f) else {}
            if policy.share.logs and isinstance(payload.get("message"), str):
                out["message"] = payload["message"]
            # Counts leave as numbers; the unit only as a known word unless logs are
            # shared, so a tool cannot spell out data in it.
            counts = clean_counts(payload, any_unit=policy.share.logs)
            if counts is not None:
                out.update(counts)
            sink("progress", out)
        elif kind == "resources":
            # Measured by the runtime, not the tool; numbers only in any case.
            figures = clean_figures(payload)
            if figures is not None:
                sink("resources", figures)

    return guarded
