"""Tasks: details with lifecycle transitions, log lines, metric samples."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from flowfed.server import queries, run_facts
from flowfed.server.auth import require_task_access
from flowfed.server.deps import AUTH_ERRORS, NOT_FOUND, db_of
from flowfed.server.problems import ProblemError
from flowfed.server.schemas import INT32_MAX, LogPage, Task, TaskMetrics

router = APIRouter(
    prefix="/api/v1/tasks",
    tags=["tasks"],
    # Nodes and tools may read the tasks their scope names (403 for any other id).
    dependencies=[Depends(require_task_access)],
    responses={**AUTH_ERRORS, **NOT_FOUND},
)


def _missing(task_id: str) -> ProblemError:
    return ProblemError(404, f"no task '{task_id}'", kind="not-found")


@router.get("/{task_id}", response_model=Task)
def get_task(request: Request, task_id: str) -> dict[str, Any]:
    """A task with its state, error, latest metrics and lifecycle transitions."""
    task = queries.get_task(db_of(request), task_id)
    if task is None:
        raise _missing(task_id)
    offline = run_facts.offline_nodes(getattr(request.app.state, "hub", None))
    return run_facts.task_facts(task, offline)


@router.get("/{task_id}/egress")
def task_egress(request: Request, task_id: str) -> dict[str, Any]:
    """What left the node for this placed task: the node policy's decision per output.

    ``items`` holds one record per output the step asked to share: ``output``, ``kind``,
    ``released``, ``hash``, ``size``, ``rows`` (how many of the node's rows it covers),
    ``suppressed_cells``, and ``rule`` and ``reason`` when refused, and ``audit`` (the hash
    of the node's audit entry, for ``flowfed node audit`` at that node). Empty for a
    central task.
    """
    db = db_of(request)
    if not queries.task_exists(db, task_id):
        raise _missing(task_id)
    items: list[dict[str, Any]] = []
    node = None
    for event in db.task_events(task_id, "egress"):
        payload = event.get("payload") or {}
        node = payload.get("node", node)
        items.extend(payload.get("egress") or [])
    return {"task_id": task_id, "node": node, "items": items}


@router.get("/{task_id}/logs", response_model=LogPage)
def task_logs(
    request: Request,
    task_id: str,
    offset: int = Query(0, ge=0, le=INT32_MAX, description="Index of the first line."),
    limit: int = Query(500, ge=1, le=10_000, description="Most lines to return."),
) -> dict[str, Any]:
    """A window of a task's log lines, in emission order."""
    db = db_of(request)
    if not queries.task_exists(db, task_id):
        raise _missing(task_id)
    total, items = queries.task_logs(db, task_id, offset, limit)
    nxt = offset + len(items)
    return {
        "task_id": task_id,
        "offset": offset,
        "limit": limit,
        "total": total,
        "items": items,
        "next_offset": nxt if nxt < total else None,
    }


@router.get("/{task_id}/metrics", response_model=TaskMetrics)
def task_metrics(request: Request, task_id: str) -> dict[str, Any]:
    """Every metric sample a task reported, and the latest value of each metric."""
    db = db_of(request)
    if not queries.task_exists(db, task_id):
        raise _missing(task_id)
    samples = db.task_metrics(task_id)
    latest = {s["name"]: s["value"] for s in samples}
    return {"task_id": task_id, "latest": latest, "samples": samples}
