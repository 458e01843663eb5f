"""The trigger service in-process on real SQLite and PostgreSQL, with a hand-driven clock.

The starter here records a running run row (what RunManager.start does first) instead of
executing a flow: these tests are about claims, overlap and catchup; the server tests run
real flows.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.db.platform_events import record
from flowfed.server.triggers import service as svc
from flowfed.server.triggers import sources
from flowfed.server.triggers.model import ManualClock, TriggerSpec, render_params
from flowfed.server.triggers.service import TriggerService
from tests.triggers.conftest import T0


class Starter:
    """Records each start as a running run row; thread-safe."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, flow: str, version: int | None, params: dict[str, Any], run_id: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(
                m.runs.insert().values(
                    id=run_id,
                    flow_name=flow,
                    flow_version=str(version or 1),
                    spec={},
                    params=params,
                    status="running",
                    created_at=time.time(),
                )
            )
        with self.lock:
            self.calls.append((flow, params))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    d = Database(db_url)
    d.ensure_schema()
    yield d
    d.close()


def end_run(db: Database, run_id: str, status: str = "success") -> None:
    with db.engine.begin() as conn:
        conn.execute(
            update(m.runs).where(m.runs.c.id == run_id).values(status=status, ended_at=time.time())
        )


def race(services: list[TriggerService]) -> None:
    """Run one pass of every service at the same moment, each in its own thread."""
    barrier = threading.Barrier(len(services))
    errors: list[BaseException] = []

    def go(s: TriggerService) -> None:
        barrier.wait()
        try:
            s.tick()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def spec(**kw: Any) -> TriggerSpec:
    return TriggerSpec.model_validate({"name": "t", "flow": "f", **kw})


def test_two_services_racing_on_the_same_ticks_start_each_tick_once(db_url: str) -> None:
    dbs = [Database(db_url) for _ in range(2)]
    dbs[0].ensure_schema()
    try:
        starter = Starter(dbs[0])
        clock = ManualClock(T0)
        svc.create(dbs[0], spec(schedule={"every": 60}, overlap="allow"), clock.now())
        services = [TriggerService(d, starter, clock) for d in dbs]
        for k in range(1, 11):
            clock.t = T0 + 60 * k + 0.5
            race(services)
        assert len(starter.calls) == 10
        fires = svc.history(dbs[0], "t", limit=100)
        assert sorted(f["scheduled_for"] for f in fires) == [T0 + 60 * k for k in range(1, 11)]
    finally:
        for d in dbs:
            d.close()


def test_two_services_racing_on_one_event_start_it_once(db_url: str) -> None:
    dbs = [Database(db_url) for _ in range(2)]
    dbs[0].ensure_schema()
    try:
        starter = Starter(dbs[0])
        svc.create(dbs[0], spec(on={"platform": {"kind": "model.approved"}}, overlap="allow"), T0)
        for i in range(5):
            record(dbs[1], "model.approved", {"model": "m", "version": i})
        services = [TriggerService(d, starter, ManualClock(T0)) for d in dbs]
        race(services)
        for s in services:
            s.tick()
        assert len(starter.calls) == 5
        assert len(svc.history(dbs[0], "t")) == 5
    finally:
        for d in dbs:
            d.close()


def test_overlap_queue_starts_the_queued_fire_when_the_previous_run_ends(db: Database) -> None:
    starter = Starter(db)
    clock = ManualClock(T0)
    svc.create(db, spec(schedule={"every": 60}, overlap="queue"), clock.now())
    s = TriggerService(db, starter, clock)
    clock.t = T0 + 60.5
    [first] = s.tick()
    assert first["status"] == "started"
    clock.t = T0 + 120.5
    [queued] = s.tick()
    assert queued["status"] == "queued" and first["run_id"] in queued["reason"]
    assert s.tick() == []  # still running: stays queued
    end_run(db, first["run_id"])
    [dequeued] = s.tick()
    assert dequeued["id"] == queued["id"] and dequeued["status"] == "started"
    assert len(starter.calls) == 2


def test_overlap_allow_starts_beside_a_running_run(db: Database) -> None:
    starter = Starter(db)
    clock = ManualClock(T0)
    svc.create(db, spec(schedule={"every": 60}, overlap="allow"), clock.now())
    s = TriggerService(db, starter, clock)
    for k in (1, 2):
        clock.t = T0 + 60 * k + 0.5
        assert [f["status"] for f in s.tick()] == ["started"]
    assert len(starter.calls) == 2


def test_ticks_due_while_disabled_never_fire_even_with_catchup(db: Database) -> None:
    starter = Starter(db)
    clock = ManualClock(T0)
    svc.create(db, spec(schedule={"every": 60}, catchup=True), clock.now())
    s = TriggerService(db, starter, clock)
    svc.set_enabled(db, "t", False, clock.now())
    clock.t = T0 + 600
    assert s.tick() == []
    svc.set_enabled(db, "t", True, clock.now())
    assert s.tick() == []
    clock.t = T0 + 660.5
    assert [f["status"] for f in s.tick()] == ["started"]
    assert len(starter.calls) == 1


def test_a_metric_crossing_its_threshold_fires_once_per_run(db: Database) -> None:
    starter = Starter(db)
    svc.create(
        db,
        spec(
            on={"metric": {"name": "auc", "above": 0.9}},
            params={"run": "${event.run_id}", "auc": "${event.value}"},
            overlap="allow",
        ),
        T0,
    )
    runs = [uuid.uuid4().hex for _ in range(2)]
    now = time.time()
    with db.engine.begin() as conn:
        for rid in runs:
            conn.execute(
                m.runs.insert().values(
                    id=rid,
                    flow_name="train",
                    flow_version="1",
                    spec={},
                    params={},
                    status="running",
                    created_at=now,
                )
            )
        samples = [(runs[0], 0.8), (runs[0], 0.95), (runs[0], 0.97), (runs[1], 0.5)]
        for i, (rid, value) in enumerate(samples):
            conn.execute(
                m.metrics.insert().values(
                    run_id=rid, task_id="t1", name="auc", value=value, step=i, ts=now + i
                )
            )
    s = TriggerService(db, starter, ManualClock(T0))
    fires = s.tick()
    assert [f["params"] for f in fires] == [{"run": runs[0], "auc": 0.95}]
    assert s.tick() == []


def test_a_template_or_condition_that_fails_on_an_event_is_recorded_not_raised(
    db: Database,
) -> None:
    starter = Starter(db)
    svc.create(db, spec(on={"platform": {"kind": "k"}}, params={"x": "${event.missing}"}), T0)
    svc.create(
        db,
        TriggerSpec.model_validate(
            {"name": "c", "flow": "f", "on": {"platform": {"kind": "k"}}, "when": "event.nope > 1"}
        ),
        T0,
    )
    record(db, "k", {"present": 1})
    TriggerService(db, starter, ManualClock(T0)).tick()
    [bad_params] = svc.history(db, "t")
    assert bad_params["status"] == "failed" and "params:" in bad_params["reason"]
    assert "'missing' is not available" in bad_params["reason"]
    [bad_when] = svc.history(db, "c")
    assert bad_when["status"] == "failed" and bad_when["reason"].startswith("when:")
    assert starter.calls == []
    with db.engine.connect() as conn:
        assert all(conn.execute(select(m.triggers.c.enabled)).scalars())


def test_cron_ticks_follow_the_time_zone_across_daylight_saving() -> None:
    s = spec(schedule={"cron": "0 2 * * 1", "timezone": "Europe/Berlin"}).schedule
    assert s is not None
    winter = s.next_tick(1_795_521_630.0, 0)  # after Mon 2026-11-23 12:00 UTC
    assert winter == 1_796_000_400.0  # Mon 2026-11-30 01:00 UTC = 02:00 CET
    summer = s.next_tick(1_780_000_000.0, 0)  # late May 2026
    assert summer % 3600 == 0 and time.gmtime(summer).tm_hour == 0  # 02:00 CEST


def test_interval_ticks_count_from_the_trigger_creation() -> None:
    s = spec(schedule={"every": "15m"}).schedule
    assert s is not None
    assert s.ticks(100.0, 100.0 + 3600, anchor=100.0) == [100.0 + 900 * k for k in (1, 2, 3, 4)]
    assert s.next_tick(1000.0, anchor=100.0) == 1900.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"schedule": {"every": 60}, "on": {"run": {}}}, "exactly one of 'schedule' or 'on'"),
        ({}, "exactly one of 'schedule' or 'on'"),
        ({"schedule": {"cron": "* * *"}}, "invalid cron expression"),
        ({"schedule": {"cron": "* * * * *", "every": 5}}, "exactly one of 'cron' or 'every'"),
        ({"schedule": {"cron": "* * * * *", "timezone": "Mars/Base"}}, "unknown time zone"),
        ({"schedule": {"every": "soon"}}, "invalid duration"),
        ({"schedule": {"every": 60}, "when": "event.x"}, "'when' needs an event"),
        ({"schedule": {"every": 60}, "params": {"a": "${event.x}"}}, "templates need an event"),
        ({"on": {"run": {}, "artifact": {}}}, "'on' needs exactly one of"),
        ({"on": {"metric": {"name": "auc"}}}, "exactly one of 'above' or 'below'"),
        ({"on": {"run": {}}, "when": "__import__('os')"}, "may be called"),
        ({"on": {"run": {}}, "when": "os.system"}, "unknown name 'os'"),
        ({"on": {"run": {}}, "when": "event.__class__"}, "private attribute"),
        ({"on": {"run": {}}, "params": {"a": "${open('x')}"}}, "only len, min"),
        ({"on": {"run": {}}, "overlap": "never"}, "'skip', 'queue' or 'allow'"),
    ],
)
def test_bad_definitions_are_refused_with_the_reason(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TriggerSpec.model_validate({"name": "t", "flow": "f", **data})


def test_templates_keep_the_type_of_a_whole_value_and_format_inside_text() -> None:
    event = {"node": "hospital-a", "version": 3, "params": {"n": 2}}
    params = {"node": "${event.node}", "v": "${event.version}", "tag": "v${event.version}-x"}
    assert render_params(params, event) == {"node": "hospital-a", "v": 3, "tag": "v3-x"}
    assert render_params({"l": ["${event.params.n * 2}", 1]}, event) == {"l": [4, 1]}


def test_a_busy_source_is_read_page_by_page_to_its_end(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "SCAN_LIMIT", 3)
    starter = Starter(db)
    svc.create(db, spec(on={"platform": {"kind": "burst"}}, overlap="allow"), T0)
    same_ts = time.time()
    for i in range(10):  # several share one timestamp: the page boundary must split them
        record(db, "burst", {"i": i}, ts=same_ts + (i // 4))
    s = TriggerService(db, starter, ManualClock(T0))
    assert len(s.tick()) == 10
    assert s.tick() == []
    record(db, "burst", {"i": 10})
    assert len(s.tick()) == 1


@pytest.mark.parametrize("run_was_recorded", [False, True])
def test_a_claim_left_by_a_dead_server_is_finished_once_by_the_next_pass(
    db: Database, run_was_recorded: bool
) -> None:
    starter = Starter(db)
    clock = ManualClock(T0)
    row = svc.create(db, spec(on={"platform": {"kind": "quiet"}}), clock.now())
    # What a server killed right after claiming a fire leaves behind.
    run_id = uuid.uuid4().hex
    with db.engine.begin() as conn:
        conn.execute(
            m.trigger_fires.insert().values(
                id=uuid.uuid4().hex,
                trigger_id=row["id"],
                fire_key="event:1",
                status="claimed",
                run_id=run_id,
                event={},
                params={"a": 1},
                catchup=False,
                created_at=T0 + 60,
                updated_at=T0 + 60,
            )
        )
    if run_was_recorded:
        Starter(db)("f", None, {"a": 1}, run_id)
    s = TriggerService(db, starter, clock)
    clock.t = T0 + 61
    assert s.tick() == []  # not stale yet: that server may still be starting it
    clock.t = T0 + 60 + svc.CLAIM_STALE_S + 1
    [fire] = s.tick()
    assert fire["status"] == "started" and fire["run_id"] == run_id
    assert starter.calls == ([] if run_was_recorded else [("f", {"a": 1})])
    [shown] = [f for f in svc.history(db, "t") if f["fire_key"] == "event:1"]
    assert shown["status"] == "started" and shown["run_id"] == run_id


def test_two_services_racing_on_different_events_keep_overlap_skip(db_url: str) -> None:
    dbs = [Database(db_url) for _ in range(2)]
    dbs[0].ensure_schema()
    try:
        starter = Starter(dbs[0])
        svc.create(dbs[0], spec(on={"platform": {"kind": "burst"}}, overlap="skip"), T0)
        for i in range(6):
            record(dbs[1], "burst", {"i": i})
        services = [TriggerService(d, starter, ManualClock(T0)) for d in dbs]
        race(services)
        statuses = sorted(f["status"] for f in svc.history(dbs[0], "t"))
        assert statuses == ["skipped"] * 5 + ["started"]
        assert len(starter.calls) == 1
    finally:
        for d in dbs:
            d.close()


def test_a_long_outage_of_a_fast_schedule_catches_up_with_the_latest_tick(db: Database) -> None:
    starter = Starter(db)
    clock = ManualClock(T0)
    svc.create(db, spec(schedule={"every": 60}), clock.now())
    s = TriggerService(db, starter, clock)
    clock.t = T0 + 60 * 5000 + 45  # 5000 ticks missed, the last one 45 s ago
    [fire] = s.tick()
    assert fire["status"] == "started" and fire["catchup"] is True
    assert fire["scheduled_for"] == T0 + 60 * 5000
    assert fire["event"]["missed"] == 1000  # counted up to 1000
    assert s.tick() == []
    assert len(starter.calls) == 1


@pytest.mark.parametrize(
    ("cron", "after", "until", "expected"),
    [
        ("* * * * *", T0, T0 + 29.5, None),  # 12:00:30 .. 12:00:59.5: no tick
        ("* * * * *", T0, T0 + 30, T0 + 30),  # a tick exactly at `until` counts
        ("* * * * *", T0, T0 + 200, T0 + 150),
        ("0 * * * *", T0, T0 + 86400, T0 + 86400 - 30),
    ],
)
def test_the_latest_cron_tick_in_a_window(
    cron: str, after: float, until: float, expected: float | None
) -> None:
    s = spec(schedule={"cron": cron}).schedule
    assert s is not None
    assert s.last_tick(after, until, anchor=after) == expected
