"""What the monitors read off a run beyond its rows: durations, honest step progress,
final step states, stalls, and tasks waiting on offline nodes.

The REST routes add these fields to the run, step and task JSON they return
(docs/dashboard.md, "Data"); nothing here is stored, so they are always computed from the
rows as they are now.

================  ==========================================================================
task              ``duration_s`` (so far, while it runs), ``waiting_on``
                  ``{"node", "offline_since"}`` for a task not done whose node is offline
step              ``started_at``, ``ended_at``, ``duration_s``, ``progress`` ``{"done",
                  "total", "unit"}`` (rounds of a federated step, else tasks), ``stalled``,
                  and a final ``status`` once the run has ended
run               ``started_at``, ``duration_s``
================  ==========================================================================

Example:
    >>> run_times({"created_at": 10.0, "ended_at": 12.5})
    {'started_at': 10.0, 'ended_at': 12.5, 'duration_s': 2.5}
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.runtime.usage import stall_after_s

_DONE = frozenset({"finished", "cached", "error", "skipped", "cancelled"})
_ROUND = re.compile(r"/round (\d+)/aggregate$")
_CONFIG_REF = re.compile(r"\$\{config\.([A-Za-z_][A-Za-z0-9_]*)\}")
#: Event kinds that count as a step making progress (resource samples do not: a hung tool
#: still has a growing wall time).
_PROGRESS_KINDS = ("transition", "progress", "metric", "retry")


def iso(ts: float) -> str:
    """A UTC ISO 8601 time: ``2026-12-05T17:01:09Z``."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_times(run: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """``started_at``, ``ended_at`` and ``duration_s`` of a run (so far while it runs)."""
    start, end = run["created_at"], run.get("ended_at")
    until = end if end is not None else (now if now is not None else time.time())
    return {"started_at": start, "ended_at": end, "duration_s": round(until - start, 3)}


def task_facts(
    task: dict[str, Any], offline: Mapping[str, float | None], now: float | None = None
) -> dict[str, Any]:
    """Add ``duration_s`` and ``waiting_on`` to a task row (in place; returned)."""
    now = time.time() if now is None else now
    start, end = task.get("started_at"), task.get("ended_at")
    task["duration_s"] = round((end if end is not None else now) - start, 3) if start else None
    node = str(task.get("node"))
    waiting = task.get("state") not in _DONE and node in offline
    since = offline.get(node)
    task["waiting_on"] = (
        {"node": node, "offline_since": iso(since) if since else None} if waiting else None
    )
    task.setdefault("resources", None)
    return task


def offline_nodes(hub: Any) -> dict[str, float | None]:
    """Offline nodes of the server's hub and when each was last heard from (None: never)."""
    if hub is None:
        return {}
    out: dict[str, float | None] = {}
    for name, info in hub.nodes().items():
        if not info.online:
            out[name] = info.last_seen
    return out


def last_activity(db: Database, run_id: str) -> dict[str, float]:
    """Per task of the run: when it last moved, reported progress or a metric."""
    e = m.events
    q = (
        select(e.c.task_id, func.max(e.c.ts))
        .where(e.c.run_id == run_id, e.c.kind.in_(_PROGRESS_KINDS), e.c.task_id.is_not(None))
        .group_by(e.c.task_id)
    )
    with db.engine.connect() as conn:
        return {row[0]: float(row[1]) for row in conn.execute(q)}


def step_facts(
    step: dict[str, Any],
    written: Mapping[str, Any] | None,
    run: Mapping[str, Any],
    activity: Mapping[str, float],
    now: float | None = None,
) -> dict[str, Any]:
    """Add times, progress and ``stalled`` to a step of :func:`queries.run_steps`, and make
    its status final once the run has ended (in place; returned)."""
    now = time.time() if now is None else now
    tasks = step["tasks"]
    starts = [t["started_at"] for t in tasks if t.get("started_at")]
    ends = [t["ended_at"] for t in tasks if t.get("ended_at")]
    status = step["status"]
    if run.get("status") not in (None, "running") and status in ("running", "pending"):
        # The run is over: a step still open never finishes now.
        if run["status"] == "cancelled":
            status = "cancelled"
        elif status == "running":
            status = "failed"
        else:
            status = "skipped"
        step["status"] = status
    open_ = status in ("running", "pending")
    start = min(starts) if starts else None
    end = None if open_ or not ends else max(ends)
    if end is None and not open_ and start is not None:
        end = run.get("ended_at")
    step["started_at"] = start
    step["ended_at"] = end
    step["duration_s"] = (
        round((end if end is not None else now) - start, 3) if start is not None else None
    )
    config = {**((run.get("spec") or {}).get("config") or {}), **(run.get("params") or {})}
    step["progress"] = step_progress(tasks, written, config)
    moved = [activity.get(t["id"]) or t.get("ended_at") or t.get("started_at") for t in tasks]
    moved = [x for x in moved if x] + [t["created_at"] for t in tasks]
    step["stalled"] = bool(status == "running" and moved and now - max(moved) > stall_after_s())
    return step


def _resolved(value: Any, config: Mapping[str, Any]) -> Any:
    """``${config.rounds}`` as the run's config (with its params) says; else ``value``."""
    if isinstance(value, str):
        ref = _CONFIG_REF.fullmatch(value.strip())
        if ref is not None:
            value = config.get(ref.group(1))
        with contextlib.suppress(TypeError, ValueError):
            value = int(value)
    return value


def step_progress(
    tasks: list[dict[str, Any]],
    written: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Rounds done over rounds for a federated step, else tasks done over tasks."""
    fed = (written or {}).get("federated")
    rounds = _resolved(fed.get("rounds"), config or {}) if isinstance(fed, dict) else None
    if isinstance(rounds, int) and not isinstance(rounds, bool):
        done = {
            int(mt.group(1))
            for t in tasks
            if t.get("state") in ("finished", "cached")
            and (mt := _ROUND.search(t.get("plan_key") or ""))
        }
        return {"done": len(done), "total": rounds, "unit": "rounds"}
    finished = sum(1 for t in tasks if t.get("state") in _DONE)
    return {"done": finished, "total": len(tasks), "unit": "tasks"}
