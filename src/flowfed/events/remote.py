"""Buses for several server processes: Redis pub/sub and NATS.

Each server process's database writer publishes the run events it committed; every
process's WebSocket handlers subscribe, so a run started through one process streams to
a browser connected to another. Messages are the events as JSON on one channel (Redis)
or subject (NATS) per run, under a prefix taken from the URL (``?prefix=...``) so that
deployments (and test runs) sharing a broker never see each other's events.

Publishing happens on writer threads, subscribing on the server's event loop: the Redis
bus publishes with a blocking client and reads with an asyncio one; the NATS bus keeps
one connection on a private event loop thread and hands messages to subscribers' loops.

Example:
    >>> bus = make_bus("memory://")
    >>> type(bus).__name__
    'MemoryBus'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from flowfed.events.bus import Event, MemoryBus, Subscription

SUPPORTED = ("memory://", "redis://", "rediss://", "nats://")


class BusURLError(ValueError):
    """A broker URL flowfed cannot use; the message lists the supported schemes."""


class BrokerUnreachable(ConnectionError):
    """The broker did not answer; the message names its URL and the reason."""


def _reason(exc: BaseException) -> str:
    """A client library's error as one line (some carry no text: then their type)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__


def _split(url: str) -> tuple[str, str]:
    """The URL without its ``prefix`` query parameter, and that prefix."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    prefix = (query.pop("prefix", ["flowfed"]) or ["flowfed"])[0]
    rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, "")), prefix


def make_bus(url: str | None) -> Any:
    """The bus a broker URL names: ``memory://`` (default), ``redis://…``, ``nats://…``."""
    if not url or url.startswith("memory:"):
        return MemoryBus()
    if url.startswith(("redis://", "rediss://")):
        base, prefix = _split(url)
        return RedisBus(base, prefix)
    if url.startswith("nats://"):
        base, prefix = _split(url)
        return NatsBus(base, prefix)
    raise BusURLError(f"unsupported broker URL {url!r}; use one of: {', '.join(SUPPORTED)}")


class _RemoteSubscription(Subscription):
    """A subscription fed by a broker listener task; closing stops the listener."""

    def __init__(self, bus: Any, run_id: str | None, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(bus, run_id, loop)
        self._stop: Any = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._stop is not None:
                self._stop()


class RedisBus:
    """Run events over Redis pub/sub (channel ``<prefix>:events:<run_id>``)."""

    def __init__(self, url: str, prefix: str = "flowfed") -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self._pub = redis.Redis.from_url(url)

    def channel(self, run_id: str | None) -> str:
        """The channel of a run (a pattern over all runs for ``None``)."""
        return f"{self.prefix}:events:{run_id if run_id else '*'}"

    def ping(self) -> bool:
        """Whether the broker answers (for ``/ready``)."""
        return bool(self._pub.ping())

    def check(self) -> None:
        """Raise :class:`BrokerUnreachable` (URL and reason) unless the broker answers."""
        try:
            self._pub.ping()
        except Exception as exc:
            raise BrokerUnreachable(
                f"cannot reach the Redis broker at {self.url}: {_reason(exc)}"
            ) from None

    def publish(self, events: list[Event]) -> None:
        """Publish committed events (from any thread), one message per event, in order."""
        pipe = self._pub.pipeline(transaction=False)
        for e in events:
            pipe.publish(self.channel(e["run_id"]), json.dumps(e, default=str))
        pipe.execute()

    def close(self) -> None:
        """Release the publishing connection."""
        self._pub.close()

    def subscribe(self, run_id: str | None) -> Subscription:
        """Subscribe from a coroutine; events arrive on the running loop."""
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        sub = _RemoteSubscription(self, run_id, loop)
        client = aioredis.Redis.from_url(self.url)
        pubsub = client.pubsub()
        ready = sub.ready
        ready.clear()

        async def listen() -> None:
            try:
                if run_id is None:
                    await pubsub.psubscribe(self.channel(None))
                else:
                    await pubsub.subscribe(self.channel(run_id))
                ready.set()
                while not sub.closed:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") in ("message", "pmessage"):
                        sub._deliver([json.loads(msg["data"])])
            finally:
                ready.set()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()

        task = loop.create_task(listen())
        sub._stop = task.cancel
        return sub


class NatsBus:
    """Run events over NATS (subject ``<prefix>.events.<run_id>``)."""

    def __init__(self, url: str, prefix: str = "flowfed") -> None:
        self.url = url
        self.prefix = prefix
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="flowfed-nats"
        )
        self._thread.start()
        try:
            self._nc: Any = self._call(self._connect(), timeout=15.0)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self) -> Any:
        import logging

        import nats

        log = logging.getLogger("flowfed.events")
        first_error: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def on_error(exc: BaseException) -> None:
            # Replaces nats-py's default callback, which logs every failed attempt with a
            # traceback: before the first connection the first error is the answer; after
            # it, each error is one line in the log while the client reconnects.
            if not first_error.done():
                first_error.set_result(exc)
            else:
                log.warning("NATS broker %s: %s", self.url, _reason(exc))

        # nats-py retries an unreachable broker forever, even on the first connection:
        # the first error (or no answer in 10 s) ends the attempt with the reason.
        connecting: asyncio.Future[Any] = asyncio.ensure_future(
            nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=-1, error_cb=on_error)
        )
        done, _ = await asyncio.wait(
            {connecting, first_error}, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        if connecting in done:
            return connecting.result()
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        cause = first_error.result() if first_error.done() else "no answer within 10 s"
        reason = cause if isinstance(cause, str) else _reason(cause)
        raise BrokerUnreachable(f"cannot reach the NATS broker at {self.url}: {reason}")

    def subject(self, run_id: str | None) -> str:
        """The subject of a run (a wildcard over all runs for ``None``)."""
        return f"{self.prefix}.events.{run_id if run_id else '*'}"

    def ping(self) -> bool:
        """Whether the broker connection is up (for ``/ready``)."""
        return bool(self._nc.is_connected)

    def publish(self, events: list[Event]) -> None:
        """Publish committed events (from any thread), in order."""

        async def send() -> None:
            for e in events:
                await self._nc.publish(
                    self.subject(e["run_id"]), json.dumps(e, default=str).encode()
                )
            await self._nc.flush()

        self._call(send())

    def subscribe(self, run_id: str | None) -> Subscription:
        """Subscribe from a coroutine; events arrive on the running loop."""
        loop = asyncio.get_running_loop()
        sub = _RemoteSubscription(self, run_id, loop)

        async def on_message(msg: Any) -> None:
            event = json.loads(msg.data)
            with contextlib.suppress(RuntimeError):  # subscriber loop closed
                loop.call_soon_threadsafe(sub._deliver, [event])

        nats_sub = self._call(self._nc.subscribe(self.subject(run_id), cb=on_message))

        def stop() -> None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(nats_sub.unsubscribe(), self._loop)

        sub._stop = stop
        return sub

    def close(self) -> None:
        """Drain the connection and stop its loop."""
        with contextlib.suppress(Exception):
            self._call(self._nc.drain())
        self._loop.call_soon_threadsafe(self._loop.stop)
