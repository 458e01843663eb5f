"""Where event triggers look: each kind's source table, read page by page.

An event trigger (``on: run``, ``artifact``, ``metric``, ``node_dataset``, ``platform``)
watches rows of one table: :func:`event_source` says which rows, by which timestamp and id
they are ordered, and how a row becomes the ``(fire key, event)`` the trigger's ``when:``
and ``params:`` see; :func:`scan_events` reads them from a timestamp on. The event shapes
are part of the trigger language (docs/triggers.md), so they have a room of their own,
apart from the exactly-once firing in :mod:`flowfed.server.triggers.service`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, select

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.db.platform_events import NODE_DATASET_CHANGED
from flowfed.server.triggers.model import TriggerSpec

__all__ = ["EVENT_SLACK_S", "MAX_PAGES", "SCAN_LIMIT", "event_source", "scan_events"]

#: How far behind its watermark an event trigger re-reads its source: a row committed
#: late (a writer batch, another server) with an older timestamp is still seen.
EVENT_SLACK_S = 120.0
#: Rows read per page, and pages per source per pass (the rest waits for the next pass).
SCAN_LIMIT = 1000
MAX_PAGES = 50


def scan_events(
    db: Database, spec: TriggerSpec, since: float
) -> tuple[list[tuple[str, dict[str, Any]]], float | None]:
    """(fire key, event) pairs of the trigger's source from ``since``; newest ts.

    Pages through the source by (timestamp, id), so a busy window (thousands of metric
    samples) is read to its end instead of re-reading its first page forever.
    """
    assert spec.on is not None
    query, ts_col, id_col, to_event = event_source(spec)
    out: list[tuple[str, dict[str, Any]]] = []
    newest: float | None = None
    after: tuple[float, Any] | None = None
    with db.engine.connect() as conn:
        for _ in range(MAX_PAGES):
            q = query.where(ts_col >= since)
            if after is not None:
                q = q.where((ts_col > after[0]) | and_(ts_col == after[0], id_col > after[1]))
            rows = list(conn.execute(q.order_by(ts_col, id_col).limit(SCAN_LIMIT)))
            for row in rows:
                newest = row._mapping[ts_col.name]
                after = (row._mapping[ts_col.name], row._mapping[id_col.name])
                found = to_event(row)
                if found is not None:
                    out.append(found)
            if len(rows) < SCAN_LIMIT:
                break
    return out, newest


def event_source(spec: TriggerSpec) -> tuple[Any, Any, Any, Callable[[Any], Any]]:
    """The trigger's source: base query, timestamp and id columns, row → (key, event)."""
    assert spec.on is not None
    on = spec.on
    if on.run is not None:
        r = m.runs
        query = select(r).where(r.c.ended_at.is_not(None), r.c.status.in_(on.run.states()))

        def run_event(run: Any) -> tuple[str, dict[str, Any]]:
            return f"run:{run.id}", {
                "kind": "run.finished",
                "run_id": run.id,
                "flow": run.flow_name,
                "flow_version": run.flow_version,
                "status": run.status,
                "error": run.error,
                "params": run.params,
                "ended_at": run.ended_at,
            }

        return query, r.c.ended_at, r.c.id, run_event
    if on.artifact is not None:
        a = m.artifacts

        def artifact_event(art: Any) -> tuple[str, dict[str, Any]]:
            return f"artifact:{art.id}", {
                "kind": "artifact.registered",
                "artifact_id": art.id,
                "name": art.name,
                "version": art.version,
                "hash": art.hash,
                "type": art.kind,
                "run_id": art.run_id,
                "step": art.step,
                "node": art.node,
                "created_at": art.created_at,
            }

        return select(a), a.c.created_at, a.c.id, artifact_event
    if on.metric is not None:
        metric = on.metric
        mt, r = m.metrics, m.runs
        query = (
            select(mt, r.c.flow_name).join(r, r.c.id == mt.c.run_id).where(mt.c.name == metric.name)
        )

        def metric_event(sample: Any) -> tuple[str, dict[str, Any]] | None:
            if not metric.crossed(sample.value):
                return None
            # Once per run: the first sample past the threshold.
            return f"metric:{sample.run_id}:{sample.name}", {
                "kind": "metric.crossed",
                "run_id": sample.run_id,
                "task_id": sample.task_id,
                "flow": sample.flow_name,
                "name": sample.name,
                "value": sample.value,
                "above": metric.above,
                "below": metric.below,
                "ts": sample.ts,
            }

        return query, mt.c.ts, mt.c.id, metric_event
    p = m.platform_events
    assert on.node_dataset is not None or on.platform is not None
    kind = NODE_DATASET_CHANGED if on.platform is None else on.platform.kind

    def platform_event(ev: Any) -> tuple[str, dict[str, Any]]:
        return f"event:{ev.id}", {**ev.payload, "kind": ev.kind, "ts": ev.ts}

    return select(p).where(p.c.kind == kind), p.c.ts, p.c.id, platform_event
