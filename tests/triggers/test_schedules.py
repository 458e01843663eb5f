"""Schedules across server processes: one run per tick, restarts neither lose nor double."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.polling import wait_for
from tests.server.conftest import Server, stop
from tests.triggers.conftest import (
    T0,
    Clock,
    add_flow,
    add_trigger,
    history,
    launch,
    runs_of,
)

FLOW = "name: {name}\nsteps:\n  - {{name: load, tool: numbers, outputs: [raw]}}\n"


@pytest.fixture
def servers(tmp_path: Path) -> Callable[..., Server]:
    started: list[Server] = []

    def make(db_url: str, clock: Clock, name: str) -> Server:
        s = launch(tmp_path / name, db_url, clock)
        started.append(s)
        return s

    yield make
    for s in started:
        stop(s)


def settle(*servers: Server, passes: int = 8) -> None:
    """Give every server's trigger service several passes at the current clock time.

    Not a timing assertion: the tests assert what the database holds afterwards, and more
    passes only give a duplicate more chances to show up.
    """
    time.sleep(passes * 0.2)


def test_two_servers_on_one_postgresql_start_one_run_per_tick(
    servers: Callable[..., Server], pg_database: str, tmp_path: Path
) -> None:
    from tests.conftest import _reset_pg

    _reset_pg(pg_database)
    clock = Clock(tmp_path / "now")
    a = servers(pg_database, clock, "a")
    b = servers(pg_database, clock, "b")
    add_flow(a, FLOW.format(name="minutely"))
    add_trigger(a, {"name": "every-minute", "flow": "minutely", "schedule": {"cron": "* * * * *"}})
    shown = b.client().get("/api/v1/triggers/every-minute").json()
    assert shown["next_fire_at"] == T0 + 30
    for k in range(1, 4):
        tick = T0 + 30 + 60 * (k - 1)
        clock.set(tick + 0.5)
        wait_for(f"tick {k}", lambda k=k: len(history(b, "every-minute")) == k)
        settle(a, b)
    fires = history(a, "every-minute")
    assert sorted(f["scheduled_for"] for f in fires) == [T0 + 30, T0 + 90, T0 + 150]
    assert {f["status"] for f in fires} == {"started"}
    runs = runs_of(a, "minutely")
    assert len(runs) == 3
    assert {r["id"] for r in runs} == {f["run_id"] for f in fires}


@pytest.mark.parametrize("catchup", [True, False])
def test_a_tick_missed_while_the_server_was_killed_fires_once_only_with_catchup(
    servers: Callable[..., Server], db_url: str, tmp_path: Path, catchup: bool
) -> None:
    clock = Clock(tmp_path / "now")
    first = servers(db_url, clock, "first")
    add_flow(first, FLOW.format(name="hourly-report"))
    add_trigger(
        first,
        {
            "name": "report",
            "flow": "hourly-report",
            "schedule": {"cron": "* * * * *", "timezone": "Europe/Berlin"},
            "catchup": catchup,
        },
    )
    settle(first)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    # Three ticks pass while no server runs; the last one is 45 s late, past the grace.
    clock.set(T0 + 30 + 120 + 45)
    second = servers(db_url, clock, "second")
    wait_for(
        "the restart's decision",
        lambda: [f for f in history(second, "report") if f["status"] != "claimed"],
    )
    settle(second)
    fires = history(second, "report")
    assert len(fires) == 1
    fire = fires[0]
    assert fire["catchup"] is True
    assert fire["scheduled_for"] == T0 + 30 + 120
    assert fire["event"]["missed"] == 3
    if catchup:
        assert fire["status"] == "started"
        assert second.wait_run(fire["run_id"])["status"] == "success"
        assert len(runs_of(second, "hourly-report")) == 1
    else:
        assert fire["status"] == "skipped" and "catchup: false" in fire["reason"]
        assert runs_of(second, "hourly-report") == []
    # Another restart at the same time must not fire the tick again.
    stop(second)
    third = servers(db_url, clock, "third")
    settle(third)
    assert len(history(third, "report")) == 1
    assert len(runs_of(third, "hourly-report")) == (1 if catchup else 0)
    # The schedule goes on: the next tick fires normally.
    clock.set(T0 + 30 + 180 + 0.5)
    wait_for(
        "the next tick",
        lambda: [f for f in history(third, "report") if f["status"] != "claimed"][1:],
    )
    latest = history(third, "report")[0]
    assert latest["status"] == "started" and latest["catchup"] is False


def test_an_event_recorded_while_no_server_ran_fires_once_after_restart(
    servers: Callable[..., Server], db_url: str, tmp_path: Path
) -> None:
    from flowfed.db import Database
    from flowfed.db.platform_events import node_dataset_changed

    clock = Clock(tmp_path / "now")
    first = servers(db_url, clock, "first")
    add_flow(first, FLOW.format(name="prep"))
    add_trigger(first, {"name": "on-data", "flow": "prep", "on": {"node_dataset": {}}})
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    db = Database(db_url)
    try:
        node_dataset_changed(db, "hospital-a", "patients", None, "ff")
    finally:
        db.close()
    second = servers(db_url, clock, "second")
    wait_for(
        "the event's fire",
        lambda: [f for f in history(second, "on-data") if f["status"] == "started"],
    )
    settle(second)
    stop(second)
    third = servers(db_url, clock, "third")
    settle(third)
    [fire] = history(third, "on-data")
    assert fire["event"]["node"] == "hospital-a" and fire["event"]["old_hash"] is None
    assert len(runs_of(third, "prep")) == 1
