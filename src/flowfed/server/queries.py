"""Read queries the API needs beyond :class:`~flowfed.db.Database`'s (Core, no ORM)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sqlalchemy import and_, func, or_, select

from flowfed.db import MIN_PREFIX, AmbiguousRef, Database
from flowfed.db import models as m
from flowfed.spec.composite import part_names, tools_waiting


class BadCursor(ValueError):
    """A pagination cursor this server did not issue."""


def encode_cursor(created_at: float, run_id: str) -> str:
    """An opaque cursor naming the last run of a page."""
    raw = json.dumps([created_at, run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (created_at, id) a cursor names (BadCursor if it is not one of ours)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = json.loads(raw)
        if not isinstance(run_id, str) or isinstance(created_at, bool):
            raise TypeError
        return float(created_at), run_id
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadCursor(
            f"invalid cursor {cursor[:40]!r}: pass back a next_cursor unchanged"
        ) from exc


def list_runs(
    db: Database,
    *,
    limit: int,
    cursor: str | None = None,
    status: str | None = None,
    flow: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of runs, newest first (keyset pagination on ``(created_at, id)``)."""
    r = m.runs
    q = select(*[c for c in r.c if c.name != "spec"])
    if status is not None:
        q = q.where(r.c.status == status)
    if flow is not None:
        q = q.where(r.c.flow_name == flow)
    if cursor is not None:
        at, rid = decode_cursor(cursor)
        q = q.where(or_(r.c.created_at < at, and_(r.c.created_at == at, r.c.id < rid)))
    q = q.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(limit + 1)
    with db.engine.connect() as conn:
        rows = [dict(x._mapping) for x in conn.execute(q)]
    page = rows[:limit]
    nxt = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
    return page, nxt


def run_steps(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's tasks grouped by step, in the flow's step order, each with a status."""
    written = [s for s in (run.get("spec") or {}).get("steps") or [] if isinstance(s, dict)]
    spec_steps = [s.get("name") for s in written]
    types = {s.get("name"): s["type"] for s in written if isinstance(s.get("type"), str)}
    by_step: dict[str, list[dict[str, Any]]] = {}
    for t in run["tasks"]:
        by_step.setdefault(t["step"], []).append(t)
    names = [n for n in spec_steps if isinstance(n, str)]
    names += [n for n in by_step if n not in names]
    # While the run goes on, a step of several tools is not done until each has a task.
    running = run.get("status") == "running"
    waiting = {
        str(s.get("name")): tools_waiting(
            part_names(s), [t.get("plan_key") or "" for t in by_step.get(str(s.get("name")), [])]
        )
        for s in written
        if running and s.get("tools")
    }
    out = []
    for n in names:
        tasks = by_step.get(n, [])
        status = step_status(tasks)
        if waiting.get(n) and status in ("completed", "pending"):
            status = "running" if tasks else "pending"
        out.append(
            {
                "name": n,
                **({"type": types[n]} if n in types else {}),
                "status": status,
                "tasks": tasks,
            }
        )
    return out


def step_status(tasks: list[dict[str, Any]]) -> str:
    """pending, running, completed, failed, skipped or cancelled (as the live tree says)."""
    if not tasks:
        return "pending"
    states = {t["state"] for t in tasks}
    if states & {"initialized", "started", "running"}:
        return "running"
    last = tasks[-1]["state"]
    return {
        "error": "failed",
        "finished": "completed",
        "cached": "completed",
        "skipped": "skipped",
        "cancelled": "cancelled",
    }.get(last, "pending")


def get_task(db: Database, task_id: str) -> dict[str, Any] | None:
    """A task with its transitions."""
    t, tr = m.tasks, m.transitions
    with db.engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.id == task_id)).first()
        if row is None:
            return None
        task = dict(row._mapping)
        task["transitions"] = [
            dict(x._mapping)
            for x in conn.execute(select(tr).where(tr.c.task_id == task_id).order_by(tr.c.id))
        ]
    return task


def task_exists(db: Database, task_id: str) -> bool:
    """Whether a task with this id exists."""
    with db.engine.connect() as conn:
        return conn.execute(select(m.tasks.c.id).where(m.tasks.c.id == task_id)).first() is not None


def task_logs(
    db: Database, task_id: str, offset: int, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """The total number of a task's log lines and the window ``[offset, offset+limit)``."""
    lg = m.logs
    with db.engine.connect() as conn:
        total = conn.execute(
            select(func.count()).select_from(lg).where(lg.c.task_id == task_id)
        ).scalar_one()
        rows = conn.execute(
            select(lg.c.id, lg.c.ts, lg.c.level, lg.c.message)
            .where(lg.c.task_id == task_id)
            .order_by(lg.c.id)
            .offset(offset)
            .limit(limit)
        )
        return int(total), [dict(x._mapping) for x in rows]


def resolve_run_id(db: Database, ref: str) -> str | None:
    """A run id from an id or a unique prefix (AmbiguousRef if several runs match)."""
    r = m.runs
    with db.engine.connect() as conn:
        if conn.execute(select(r.c.id).where(r.c.id == ref)).first() is not None:
            return ref
        if len(ref) < MIN_PREFIX:
            return None
        found = [
            str(x[0])
            for x in conn.execute(
                select(r.c.id).where(r.c.id.startswith(ref, autoescape=True)).limit(5)
            )
        ]
    if len(found) > 1:
        raise AmbiguousRef(ref, found)
    return found[0] if found else None
