"""The trigger store: triggers and their fire history as rows, for the API and the CLI.

Create, read, enable, disable and delete triggers, list a trigger's fires with what their
runs became, and describe a trigger as the API shows it. Plain functions over the database,
no background work and no firing: the routes use them on each request, while
:class:`~flowfed.server.triggers.service.TriggerService` (which fires the triggers) only
reads what they store. Kept apart so the request side can be read without the firing
machinery, and the firing side without the bookkeeping of the API.
"""

from __future__ import annotations

import difflib
import time
import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.server.triggers.model import TriggerSpec

__all__ = [
    "TriggerError",
    "ValidationError",
    "check_flow",
    "create",
    "describe",
    "get",
    "history",
    "list_all",
    "parse_spec",
    "remove",
    "require",
    "row_dict",
    "set_enabled",
]


class TriggerError(ValueError):
    """A trigger request that cannot be honoured; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def row_dict(r: Any) -> dict[str, Any]:
    """A SQLAlchemy result row as a plain ``{column: value}`` dict."""
    return dict(r._mapping)


def create(db: Database, spec: TriggerSpec, now: float) -> dict[str, Any]:
    """Store a new trigger (TriggerError 409 if the name is taken); its row."""
    real = time.time()
    row = {
        "id": uuid.uuid4().hex,
        "name": spec.name,
        "kind": spec.kind,
        "spec": spec.model_dump(mode="json", exclude_none=True),
        "flow_name": spec.flow,
        "enabled": spec.enabled,
        "created_at": now,
        "updated_at": now,
        # Schedules count ticks on the service clock; events compare source timestamps,
        # which are real time.
        "watermark": now if spec.schedule is not None else real,
        "event_since": real,
        "last_fired_at": None,
        "last_run_id": None,
    }
    try:
        with db.engine.begin() as conn:
            conn.execute(m.triggers.insert().values(**row))
    except IntegrityError:
        raise TriggerError(f"a trigger named '{spec.name}' exists already", 409) from None
    return row


def check_flow(db: Database, spec: TriggerSpec) -> None:
    """Refuse (TriggerError 422) a trigger whose flow, or flow version, is not stored.

    Checked when a trigger is created: a typo in ``flow:`` would otherwise only show as a
    failed fire, hours later. A flow removed afterwards still fails its fires, with the
    reason in the history.
    """
    f = m.flows
    with db.engine.connect() as conn:
        versions = {
            int(v) for (v,) in conn.execute(select(f.c.version).where(f.c.name == spec.flow))
        }
        if not versions:
            names = [n for (n,) in conn.execute(select(f.c.name).distinct())]
    if not versions:
        close = difflib.get_close_matches(spec.flow, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else " (store it with POST /api/v1/flows)"
        raise TriggerError(f"flow: no stored flow is named '{spec.flow}'{hint}")
    if spec.version is not None and spec.version not in versions:
        raise TriggerError(
            f"version: flow '{spec.flow}' has no version {spec.version} "
            f"(stored: {', '.join(map(str, sorted(versions)))})"
        )


def get(db: Database, ref: str) -> dict[str, Any] | None:
    """A trigger by name or id."""
    t = m.triggers
    with db.engine.connect() as conn:
        found = conn.execute(select(t).where((t.c.name == ref) | (t.c.id == ref))).first()
    return None if found is None else row_dict(found)


def require(db: Database, ref: str) -> dict[str, Any]:
    """A trigger by name or id (TriggerError 404 if none)."""
    row = get(db, ref)
    if row is None:
        raise TriggerError(f"no trigger named '{ref}' (see `flowfed triggers list`)", 404)
    return row


def list_all(db: Database) -> list[dict[str, Any]]:
    """Every trigger, by name."""
    with db.engine.connect() as conn:
        return [row_dict(r) for r in conn.execute(select(m.triggers).order_by(m.triggers.c.name))]


def set_enabled(db: Database, ref: str, enabled: bool, now: float) -> dict[str, Any]:
    """Enable or disable a trigger.

    Enabling starts afresh: ticks and events of the disabled time are not "missed",
    nobody wanted them, so they never fire (not even with catchup).
    """
    row = require(db, ref)
    values: dict[str, Any] = {"enabled": enabled, "updated_at": now}
    if enabled and not row["enabled"]:
        real = time.time()
        values["watermark"] = now if row["kind"] in ("cron", "interval") else real
        values["event_since"] = real
    with db.engine.begin() as conn:
        conn.execute(update(m.triggers).where(m.triggers.c.id == row["id"]).values(**values))
    return require(db, row["id"])


def remove(db: Database, ref: str) -> None:
    """Delete a trigger and its history."""
    row = require(db, ref)
    with db.engine.begin() as conn:
        conn.execute(delete(m.trigger_fires).where(m.trigger_fires.c.trigger_id == row["id"]))
        conn.execute(delete(m.triggers).where(m.triggers.c.id == row["id"]))


def history(db: Database, ref: str, limit: int = 50) -> list[dict[str, Any]]:
    """A trigger's fires, newest first."""
    row = require(db, ref)
    f = m.trigger_fires
    q = (
        select(f)
        .where(f.c.trigger_id == row["id"])
        .order_by(f.c.created_at.desc(), f.c.fire_key.desc())
        .limit(limit)
    )
    with db.engine.connect() as conn:
        return _with_outcome(conn, [row_dict(r) for r in conn.execute(q)])


def _with_outcome(conn: Any, fires: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each fire with ``run_status``, its run's status now (running, success, failed,
    cancelled), and ``outcome``: that status for a fire that started a run, else the
    fire's own (skipped, queued, failed)."""
    ids = [x["run_id"] for x in fires if x.get("run_id")]
    status: dict[str, str] = {}
    if ids:
        r = m.runs
        status = dict(conn.execute(select(r.c.id, r.c.status).where(r.c.id.in_(ids))).all())
    for x in fires:
        x["run_status"] = status.get(x.get("run_id") or "")
        x["outcome"] = x["run_status"] or x["status"]
    return fires


def describe(db: Database, row: dict[str, Any], now: float) -> dict[str, Any]:
    """A trigger row as the API shows it: next fire time, last fire and what it started."""
    spec = TriggerSpec.model_validate(row["spec"])
    next_at = None
    if spec.schedule is not None and row["enabled"]:
        next_at = spec.schedule.next_tick(max(row["watermark"], now), row["created_at"])
    f = m.trigger_fires
    with db.engine.connect() as conn:
        last = conn.execute(
            select(f)
            .where(f.c.trigger_id == row["id"])
            .order_by(f.c.created_at.desc(), f.c.fire_key.desc())
            .limit(1)
        ).first()
        last_fire = None if last is None else _with_outcome(conn, [row_dict(last)])[0]
    return {
        "id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "flow": row["flow_name"],
        "version": spec.version,
        "enabled": row["enabled"],
        "spec": row["spec"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "next_fire_at": next_at,
        "last_fired_at": row["last_fired_at"],
        "last_run_id": row["last_run_id"],
        "last_fire": last_fire,
    }


def parse_spec(data: Any) -> TriggerSpec:
    """Validate a trigger definition (pydantic ValidationError on bad input)."""
    return TriggerSpec.model_validate(data)
