"""Real ``flowfed server`` subprocesses whose trigger clock the tests set (a file)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _reset_pg
from tests.server.conftest import Server, start_server, stop

#: A Monday, 12:00:30 UTC: half a minute before a cron "* * * * *" tick.
T0 = 1_795_521_630.0
#: Seconds between trigger passes in the test servers.
INTERVAL = "0.2"


class Clock:
    """The file a server's trigger service reads "now" from (FLOWFED_TEST_CLOCK_FILE)."""

    def __init__(self, path: Path, now: float = T0) -> None:
        self.path = path
        self.set(now)

    def set(self, now: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(repr(now))
        tmp.replace(self.path)  # atomic: a server never reads half a number

    def now(self) -> float:
        return float(self.path.read_text())


def launch(root: Path, db_url: str, clock: Clock) -> Server:
    """A server on ``db_url`` whose trigger service uses ``clock``."""
    saved = os.environ.get("FLOWFED_TEST_CLOCK_FILE")
    os.environ["FLOWFED_TEST_CLOCK_FILE"] = str(clock.path)
    try:
        # Servers sharing a database share a broker (a memory:// one refuses to share it).
        prefix = "trig" + hashlib.sha1(db_url.encode()).hexdigest()[:10]
        broker = f"redis://127.0.0.1:6379/0?prefix={prefix}"
        return start_server(root, db_url, "--trigger-interval", INTERVAL, "--broker-url", broker)
    finally:
        if saved is None:
            os.environ.pop("FLOWFED_TEST_CLOCK_FILE", None)
        else:
            os.environ["FLOWFED_TEST_CLOCK_FILE"] = saved


def history(s: Server, name: str) -> list[dict[str, Any]]:
    r = s.client().get(f"/api/v1/triggers/{name}/history")
    assert r.status_code == 200, r.text
    return list(r.json())


def add_flow(s: Server, source: str) -> None:
    r = s.client().post("/api/v1/flows", json={"source": source})
    assert r.status_code == 201, r.text


def add_trigger(s: Server, spec: dict[str, Any]) -> dict[str, Any]:
    r = s.client().post("/api/v1/triggers", json=spec)
    assert r.status_code == 201, r.text
    return dict(r.json())


def runs_of(s: Server, flow: str) -> list[dict[str, Any]]:
    r = s.client().get("/api/v1/runs", params={"flow": flow, "limit": 500})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tserver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Clock]]:
    """One server per backend shared by a module, with its clock."""
    root = tmp_path_factory.mktemp("trig")
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'flowfed.db'}"
    else:
        url = request.getfixturevalue("pg_database")
        _reset_pg(url)
    clock = Clock(root / "now")
    s = launch(root / "srv", url, clock)
    # Triggers name stored flows (an unknown one is refused): the tests' plain ones.
    for name in ("f", "fb"):
        add_flow(s, f"name: {name}\nsteps:\n  - {{name: load, tool: numbers, outputs: [x]}}\n")
    yield s, clock
    stop(s)
