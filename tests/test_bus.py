"""Event buses deliver committed events in order, across processes for Redis and NATS."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from flowfed.events.remote import BusURLError, make_bus


def _events(run_id: str, n: int) -> list[dict]:
    return [
        {"run_id": run_id, "seq": i, "kind": "log", "task_id": None, "payload": {"i": i}, "ts": 0.0}
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize("scheme", ["memory", "redis", "nats"])
def test_events_published_from_a_thread_reach_subscribers_in_order(scheme: str) -> None:
    prefix = f"flowfedtest{uuid.uuid4().hex[:10]}"
    url = {
        "memory": "memory://",
        "redis": f"redis://127.0.0.1:6379/0?prefix={prefix}",
        "nats": f"nats://127.0.0.1:4222?prefix={prefix}",
    }[scheme]
    publisher = make_bus(url)
    # A second bus object stands for a second server process on the same broker.
    subscriber = publisher if scheme == "memory" else make_bus(url)

    async def scenario() -> list[int]:
        mine = subscriber.subscribe("run-a")
        other = subscriber.subscribe("run-b")
        await mine.wait_ready()
        await other.wait_ready()
        t = threading.Thread(target=publisher.publish, args=(_events("run-a", 50),))
        t.start()
        got = [(await mine.get(timeout=10))["seq"] for _ in range(50)]
        t.join()
        assert other.get_nowait() is None
        mine.close()
        other.close()
        return got

    try:
        assert asyncio.run(scenario()) == list(range(1, 51))
    finally:
        for bus in {id(publisher): publisher, id(subscriber): subscriber}.values():
            if hasattr(bus, "close"):
                bus.close()


def test_an_unknown_broker_scheme_is_a_clear_error() -> None:
    with pytest.raises(BusURLError, match="use one of: memory://, redis://"):
        make_bus("kafka://localhost:9092")
