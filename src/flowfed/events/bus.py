"""The event bus: committed run events fan out to whoever watches.

Publishers are the database writers' threads (events are announced only once committed);
subscribers are WebSocket handlers on the server's event loop. The in-memory bus serves
one server process; Redis and NATS buses (same interface) serve several.

Example:
    >>> import asyncio
    >>> bus = MemoryBus()
    >>> async def main():
    ...     sub = bus.subscribe("run1")
    ...     bus.publish([{"run_id": "run1", "seq": 1, "kind": "log", "payload": {}}])
    ...     event = await sub.get(timeout=1)
    ...     sub.close()
    ...     return event["seq"]
    >>> asyncio.run(main())
    1
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Protocol

Event = dict[str, Any]


class Subscription:
    """Events of one run (or of every run, for ``run_id=None``), in publication order."""

    def __init__(self, bus: Any, run_id: str | None, loop: asyncio.AbstractEventLoop):
        self.run_id = run_id
        self._bus = bus
        self._loop = loop
        self._q: asyncio.Queue[Event] = asyncio.Queue()
        self.closed = False
        # Set once the broker confirmed the subscription: events published after that
        # are guaranteed to arrive (set at once for the in-memory bus).
        self.ready = asyncio.Event()
        self.ready.set()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the subscription is live (so no later event can be missed)."""
        await asyncio.wait_for(self.ready.wait(), timeout)

    def _deliver(self, events: list[Event]) -> None:
        for e in events:
            self._q.put_nowait(e)

    async def get(self, timeout: float | None = None) -> Event:
        """The next event (TimeoutError after ``timeout`` seconds)."""
        return await asyncio.wait_for(self._q.get(), timeout)

    def get_nowait(self) -> Event | None:
        """The next event if one is waiting."""
        try:
            return self._q.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        """Stop receiving events."""
        if not self.closed:
            self.closed = True
            self._bus._remove(self)


class Bus(Protocol):
    """What the server needs of a bus."""

    def publish(self, events: list[Event]) -> None: ...

    def subscribe(self, run_id: str | None) -> Subscription: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class MemoryBus:
    """An in-process bus: thread-safe publish, asyncio subscribers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []

    def publish(self, events: list[Event]) -> None:
        """Hand events to every matching subscriber (safe from any thread)."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            mine = [e for e in events if sub.run_id is None or e.get("run_id") == sub.run_id]
            if not mine:
                continue
            try:
                sub._loop.call_soon_threadsafe(sub._deliver, mine)
            except RuntimeError:  # the subscriber's loop is gone
                sub.close()

    def subscribe(self, run_id: str | None) -> Subscription:
        """Subscribe from a coroutine (the subscription belongs to the running loop)."""
        sub = Subscription(self, run_id, asyncio.get_running_loop())
        with self._lock:
            self._subs.append(sub)
        return sub

    def ping(self) -> bool:
        """Always reachable (for ``/ready``)."""
        return True

    def close(self) -> None:
        """Nothing to release."""

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
