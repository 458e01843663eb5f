"""The hub's records: one node agent's connection, and one task waiting on a node.

Example:
    >>> when(0.0)
    '1970-01-01T00:00:00Z'
    >>> offline("hospital-c", 0.0)
    "node 'hospital-c' offline since 1970-01-01T00:00:00Z"
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import WebSocket
from pydantic import BaseModel

from flowfed.node.protocol import dump_node_message
from flowfed.runtime.remote import RemoteResult, RemoteTask, RemoteTaskError


class Connection:
    """One connected node."""

    def __init__(self, name: str, ws: WebSocket, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.ws = ws
        self.loop = loop
        self.lock = asyncio.Lock()
        self.closed = False
        self.checked = time.monotonic()
        #: When a frame last arrived (monotonic): liveness counts from here.
        self.heard = self.checked

    async def send(self, msg: BaseModel) -> None:
        async with self.lock:
            await self.ws.send_text(dump_node_message(msg))

    def send_threadsafe(self, msg: BaseModel, timeout: float = 10.0) -> bool:
        """Send from a thread other than the loop's; False if the connection is gone."""
        if self.closed:
            return False
        try:
            fut = asyncio.run_coroutine_threadsafe(self.send(msg), self.loop)
            fut.result(timeout)
            return True
        except Exception:
            return False


@dataclass(eq=False)
class PendingTask:
    """A task ``NodeHub.run_task`` is waiting on."""

    task: RemoteTask
    sent: Connection | None = None
    sent_at: float = 0.0
    lost_at: float | None = None
    outcome: RemoteResult | RemoteTaskError | None = None
    telemetry: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: Wakes only this task's ``run_task`` thread; shares the hub's lock. One condition
    #: per task rather than the hub's: with hundreds of tasks in flight, waking every
    #: waiting thread on every frame made each frame cost O(tasks) (quadratic overall).
    wake: threading.Condition | None = None

    def notify(self) -> None:
        """Wake the thread waiting on this task (call with the hub's lock held)."""
        if self.wake is not None:
            self.wake.notify_all()


def when(ts: float) -> str:
    """A wall-clock time as operators read it: ISO 8601, UTC, to the second."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def offline(node: str, since: float) -> str:
    return f"node '{node}' offline since {when(since)}"
