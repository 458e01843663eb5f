"""The trigger service: fires the stored triggers' flows, exactly once.

Every pass (:meth:`TriggerService.tick`) looks at each enabled trigger:

- schedules (cron, interval): the ticks in ``(watermark, now]``. A tick at most
  ``misfire_grace`` seconds late fires normally; older ones were missed (the server was
  down) and, with ``catchup: true``, the latest of them fires once with ``catchup`` set
  (missed ticks are coalesced, as Kubernetes CronJobs and APScheduler's ``coalesce`` do;
  no backfill of every interval as Airflow's catchup does). With ``catchup: false`` a
  missed tick is recorded as skipped and starts nothing.
- events: rows of the source table (runs that ended, artifacts, metric samples, platform
  events) from ``watermark - EVENT_SLACK_S`` on, so rows committed late by another
  process are still seen; already handled ones are recognised by their fire key.

Exactly once: each firing is a row of ``trigger_fires`` whose ``(trigger_id, fire_key)``
is unique. Whoever inserts it starts the run; a second server handling the same tick or
event gets a unique-constraint violation and does nothing.

The triggers themselves are stored and described by :mod:`.store` (the API's side), the
event sources are read by :mod:`.sources`; this module is the firing: the background
pass, the claims, overlap, queueing and the recovery of fires a stopped server left.
The store's functions are re-exported here, where the routes and tests find them.

Example:
    >>> # svc = TriggerService(db, start=my_starter, clock=ManualClock(0.0))
    >>> # svc.tick()   # one pass; the server runs it every ``interval`` seconds
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, and_, select, update
from sqlalchemy.exc import IntegrityError

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.plan.expressions import ExpressionError
from flowfed.server.triggers.model import (
    Clock,
    SystemClock,
    TriggerSpec,
    iso,
    render_params,
)
from flowfed.server.triggers.sources import EVENT_SLACK_S, scan_events
from flowfed.server.triggers.store import (
    TriggerError,
    ValidationError,
    check_flow,
    create,
    describe,
    get,
    history,
    list_all,
    parse_spec,
    remove,
    require,
    row_dict,
    set_enabled,
)
from flowfed.wording import plural

log = logging.getLogger("flowfed.server.triggers")

#: A fire claimed this long ago (clock seconds) without a run no longer blocks overlap.
CLAIM_STALE_S = 120.0

#: Starts ``flow`` (version, params) as run ``run_id``; raises to refuse, the exception's
#: message is recorded as the reason.
Starter = Callable[[str, int | None, dict[str, Any], str], None]


class TriggerService:
    """Evaluates triggers and starts their flows; one per server process.

    ``start`` starts a stored flow (see :data:`Starter`); ``clock`` gives "now" for
    schedules (tests inject one); ``interval`` is the seconds between passes of the
    background thread.
    """

    def __init__(
        self,
        db: Database,
        start: Starter,
        clock: Clock | None = None,
        interval: float = 5.0,
    ) -> None:
        self.db = db
        self.start = start
        self.clock = clock or SystemClock()
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- background -------------------------------------------------------------------

    def run_in_background(self) -> None:
        """Run :meth:`tick` every ``interval`` seconds in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="flowfed-triggers", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a database hiccup must not end the service
                log.exception("trigger pass failed; retrying")
            if self._stop.wait(self.interval):
                return

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread (the pass under way finishes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- one pass ---------------------------------------------------------------------

    def tick(self) -> list[dict[str, Any]]:
        """Evaluate every enabled trigger once; the fires this pass recorded."""
        with self._lock:
            now = self.clock.now()
            t = m.triggers
            with self.db.engine.connect() as conn:
                rows = [row_dict(r) for r in conn.execute(select(t).where(t.c.enabled == True))]  # noqa: E712
            fires: list[dict[str, Any]] = []
            for row in rows:
                try:
                    spec = TriggerSpec.model_validate(row["spec"])
                    if spec.schedule is not None:
                        fires += self._schedule(row, spec, now)
                    else:
                        fires += self._events(row, spec, now)
                    fires += self._dequeue(row, spec, now)
                    fires += self._recover(row, spec, now)
                except Exception:
                    log.exception("trigger %s: evaluation failed", row["name"])
            return fires

    def _schedule(self, row: dict[str, Any], spec: TriggerSpec, now: float) -> list[dict[str, Any]]:
        assert spec.schedule is not None
        # Only the latest due tick matters: several due at once (a pass slower than the
        # schedule, or a server that was down) are coalesced into one run.
        tick = spec.schedule.last_tick(row["watermark"], now, row["created_at"])
        fires = []
        if tick is not None:
            catchup = now - tick > spec.misfire_grace
            event: dict[str, Any] = {"kind": "schedule.tick", "tick": tick, "tick_iso": iso(tick)}
            event["catchup"] = catchup
            # How many were due (counted up to 1000: a long outage of a fast schedule).
            ticks = spec.schedule.ticks(row["watermark"], now, row["created_at"])
            if catchup:
                event["missed"] = len(ticks)
            if catchup and not spec.catchup:
                fire = self._record(
                    row,
                    f"tick:{iso(tick)}",
                    event,
                    "skipped",
                    now,
                    reason=f"{plural(len(ticks), 'tick')} missed while no server was running "
                    "(catchup: false)",
                    catchup=True,
                    scheduled_for=tick,
                )
            else:
                fire = self._fire(
                    row, spec, f"tick:{iso(tick)}", event, now, catchup=catchup, scheduled_for=tick
                )
            if fire is not None:
                fires.append(fire)
        self._advance(row["id"], now)
        return fires

    def _advance(self, trigger_id: str, watermark: float) -> None:
        t = m.triggers
        with self.db.engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.id == trigger_id, t.c.watermark < watermark)
                .values(watermark=watermark)
            )

    # -- events -----------------------------------------------------------------------

    def _events(self, row: dict[str, Any], spec: TriggerSpec, now: float) -> list[dict[str, Any]]:
        assert spec.on is not None
        since = max(row["event_since"], row["watermark"] - EVENT_SLACK_S)
        events, newest = scan_events(self.db, spec, since)
        fires = []
        if events:
            f = m.trigger_fires
            keys = [k for k, _ in events]
            with self.db.engine.connect() as conn:
                seen = set(
                    conn.execute(
                        select(f.c.fire_key).where(
                            f.c.trigger_id == row["id"], f.c.fire_key.in_(keys)
                        )
                    ).scalars()
                )
            for key, event in events:
                if key in seen:
                    continue
                seen.add(key)
                try:
                    matched = spec.matches(event)
                except ExpressionError as exc:
                    fire = self._record(row, key, event, "failed", now, reason=f"when: {exc}")
                else:
                    fire = self._fire(row, spec, key, event, now) if matched else None
                if fire is not None:
                    fires.append(fire)
        if newest is not None:
            self._advance(row["id"], newest)
        return fires

    # -- firing -----------------------------------------------------------------------

    def _record(
        self,
        row: dict[str, Any],
        key: str,
        event: dict[str, Any],
        status: str,
        now: float,
        *,
        reason: str | None = None,
        params: dict[str, Any] | None = None,
        catchup: bool = False,
        scheduled_for: float | None = None,
        run_id: str | None = None,
        overlap: str = "allow",
    ) -> dict[str, Any] | None:
        """Insert a fire row: the claim. None when another process holds that key.

        With ``overlap`` skip or queue, a ``claimed`` fire becomes ``skipped`` or ``queued``
        when a run of the trigger is still going. That check and the insert happen under a
        lock on the trigger's row, so two servers firing different events of one trigger
        at once cannot both find it idle.
        """
        fire = {
            "id": uuid.uuid4().hex,
            "trigger_id": row["id"],
            "fire_key": key[:255],
            "status": status,
            "run_id": run_id,
            "reason": reason,
            "event": event,
            "params": params,
            "catchup": catchup,
            "scheduled_for": scheduled_for,
            "created_at": now,
            "updated_at": now,
        }
        t = m.triggers
        try:
            with self.db.engine.connect() as c:
                # SQLite: take the write lock up front (BEGIN IMMEDIATE) so the check below
                # and the insert are one serialized step; PostgreSQL: lock the trigger row.
                conn = c.execution_options(sqlite_begin="IMMEDIATE")
                with conn.begin():
                    if status == "claimed" and overlap != "allow":
                        if conn.dialect.name == "postgresql":
                            conn.execute(
                                select(t.c.id).where(t.c.id == row["id"]).with_for_update()
                            )
                        busy = self._busy_run(conn, row["id"], now)
                        if busy is not None:
                            fire["run_id"] = None
                            if overlap == "skip":
                                fire["status"] = "skipped"
                                fire["reason"] = (
                                    f"previous run {busy} is still running (overlap: skip)"
                                )
                            else:
                                fire["status"] = "queued"
                                fire["reason"] = f"waiting for run {busy} (overlap: queue)"
                    conn.execute(m.trigger_fires.insert().values(**fire))
        except IntegrityError:
            return None
        return fire

    @staticmethod
    def _busy_run(conn: Connection, trigger_id: str, now: float) -> str | None:
        """A run of this trigger still going (or a start under way), if any."""
        f, r = m.trigger_fires, m.runs
        running = conn.execute(
            select(f.c.run_id)
            .join(r, r.c.id == f.c.run_id)
            .where(f.c.trigger_id == trigger_id, f.c.status == "started")
            .where(r.c.status == "running")
            .limit(1)
        ).scalar()
        if running is not None:
            return str(running)
        starting = conn.execute(
            select(f.c.run_id)
            .where(f.c.trigger_id == trigger_id, f.c.status == "claimed")
            .where(f.c.updated_at > now - CLAIM_STALE_S)
            .limit(1)
        ).scalar()
        return None if starting is None else f"{starting} (being started)"

    def _fire(
        self,
        row: dict[str, Any],
        spec: TriggerSpec,
        key: str,
        event: dict[str, Any],
        now: float,
        *,
        catchup: bool = False,
        scheduled_for: float | None = None,
    ) -> dict[str, Any] | None:
        extra: dict[str, Any] = {"catchup": catchup, "scheduled_for": scheduled_for}
        try:
            params = render_params(spec.params, event)
        except ExpressionError as exc:
            return self._record(row, key, event, "failed", now, reason=f"params: {exc}", **extra)
        # The run id is chosen before the claim is committed: a server that dies between
        # the claim and the run leaves a fire that names a run which does not exist, and
        # the next pass (of any server) starts exactly that run (see _recover).
        fire = self._record(
            row,
            key,
            event,
            "claimed",
            now,
            params=params,
            run_id=uuid.uuid4().hex,
            overlap=spec.overlap,
            **extra,
        )
        if fire is None or fire["status"] != "claimed":
            return fire
        return self._start(row, spec, fire, params, now)

    def _start(
        self,
        row: dict[str, Any],
        spec: TriggerSpec,
        fire: dict[str, Any],
        params: dict[str, Any],
        now: float,
    ) -> dict[str, Any]:
        f, t = m.trigger_fires, m.triggers
        run_id = fire["run_id"] or uuid.uuid4().hex
        try:
            self.start(spec.flow, spec.version, params, run_id)
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("trigger %s could not start flow %s: %s", row["name"], spec.flow, reason)
            with self.db.engine.begin() as conn:
                conn.execute(
                    update(f)
                    .where(f.c.id == fire["id"])
                    .values(status="failed", reason=reason, run_id=None, updated_at=now)
                )
            return {**fire, "status": "failed", "reason": reason, "run_id": None}
        with self.db.engine.begin() as conn:
            # The trigger's row first, as every transaction touching both does (_record
            # locks it before inserting a fire): one lock order, no deadlock.
            conn.execute(
                update(t).where(t.c.id == row["id"]).values(last_fired_at=now, last_run_id=run_id)
            )
            conn.execute(
                update(f)
                .where(f.c.id == fire["id"])
                .values(status="started", run_id=run_id, reason=None, updated_at=now)
            )
            # The run says which trigger started it (the dashboard links back).
            conn.execute(update(m.runs).where(m.runs.c.id == run_id).values(trigger=row["name"]))
        return {**fire, "status": "started", "run_id": run_id, "reason": None}

    def _dequeue(self, row: dict[str, Any], spec: TriggerSpec, now: float) -> list[dict[str, Any]]:
        """Start the oldest queued fire once the trigger's previous run has ended."""
        f = m.trigger_fires
        with self.db.engine.connect() as conn:
            queued = conn.execute(
                select(f)
                .where(f.c.trigger_id == row["id"], f.c.status == "queued")
                .order_by(f.c.created_at, f.c.fire_key)
                .limit(1)
            ).first()
            busy = None if queued is None else self._busy_run(conn, row["id"], now)
        if queued is None or busy is not None:
            return []
        fire = {**row_dict(queued), "run_id": uuid.uuid4().hex}
        # Compare-and-set under the trigger's lock (as in _record): of several servers only
        # one moves it from queued to claimed, and only while no other run is going.
        t = m.triggers
        with self.db.engine.connect() as c:
            conn = c.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(select(t.c.id).where(t.c.id == row["id"]).with_for_update())
                if self._busy_run(conn, row["id"], now) is not None:
                    return []
                won = conn.execute(
                    update(f)
                    .where(and_(f.c.id == fire["id"], f.c.status == "queued"))
                    .values(status="claimed", run_id=fire["run_id"], updated_at=now)
                ).rowcount
        if won != 1:
            return []
        return [self._start(row, spec, fire, dict(fire["params"] or {}), now)]

    def _recover(self, row: dict[str, Any], spec: TriggerSpec, now: float) -> list[dict[str, Any]]:
        """Finish fires whose server died between claiming them and starting their run.

        The fire names its run id: if that run exists it did start (only the bookkeeping
        was lost); otherwise it is started now, under that id, by whichever server wins
        the compare-and-set on the fire's ``updated_at``.
        """
        f, r = m.trigger_fires, m.runs
        with self.db.engine.connect() as conn:
            stale = [
                row_dict(x)
                for x in conn.execute(
                    select(f).where(
                        f.c.trigger_id == row["id"],
                        f.c.status == "claimed",
                        f.c.updated_at <= now - CLAIM_STALE_S,
                    )
                )
            ]
        out = []
        for fire in stale:
            with self.db.engine.begin() as conn:
                exists = fire["run_id"] is not None and (
                    conn.execute(select(r.c.id).where(r.c.id == fire["run_id"])).first() is not None
                )
                values: dict[str, Any] = {"updated_at": now}
                if exists:
                    values["status"] = "started"
                won = conn.execute(
                    update(f)
                    .where(
                        f.c.id == fire["id"],
                        f.c.status == "claimed",
                        f.c.updated_at == fire["updated_at"],
                    )
                    .values(**values)
                ).rowcount
            if won != 1:
                continue
            if exists:
                out.append({**fire, "status": "started"})
                continue
            log.warning(
                "trigger %s: starting run %s left behind by a stopped server",
                row["name"],
                fire["run_id"],
            )
            out.append(self._start(row, spec, fire, dict(fire["params"] or {}), now))
        return out


__all__ = [
    "CLAIM_STALE_S",
    "EVENT_SLACK_S",
    "Starter",
    "TriggerError",
    "TriggerService",
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
    "set_enabled",
    "stored_flow_starter",
]


def stored_flow_starter(db: Database, manager: Any) -> Starter:
    """A :data:`Starter` that runs stored flows on ``manager`` (a RunManager)."""
    from flowfed.server import flows as svc

    def start(flow: str, version: int | None, params: dict[str, Any], run_id: str) -> None:
        row = svc.get(db, flow, version)
        if row is None:
            what = f"'{flow}'" + (f" version {version}" if version else "")
            raise TriggerError(f"no stored flow {what}")
        graph, _ = svc.check(svc.stored_loaded(row), params, db)
        manager.start(
            graph,
            params=params,
            flow_file=f"flowfed:flows/{row['name']}/versions/{row['version']}",
            run_id=run_id,
            principal="trigger",
        )

    return start
