"""Development-mode sessions (seed 001): a local tool attached to the server for iteration.

``flowfed tool dev tools.py:train --server URL`` creates a session
(``POST /api/v1/dev-sessions``) and connects the tool-side engine, in development mode and
without isolation, to the session's runtime channel (``WS .../dev-sessions/{id}/runtime``).
The tool idles in Initialized. Through the REST API (or ``flowfed tool exec``) a user then

- replaces its config (:meth:`DevSession.update_config`): the tool validates the values
  against its schema and either applies them or answers with a structured, non-fatal
  error, which the caller gets as a 422 problem naming each field;
- triggers test executions (:meth:`DevSession.submit`) with hyperparameters and inline
  JSON inputs, and reads their state, logs, metrics and outputs, or follows them live.

Each execution is one pass of the tool lifecycle (Started → Running → Finished | Error);
the tool-side engine then reconnects and is idle again, with the session's current config.

Sessions live in the memory of the server process that holds their channel: they vanish
with it, and several server processes behind one address need sticky routing for
``/api/v1/dev-sessions``.

Example:
    >>> reg = DevRegistry()
    >>> s = reg.create(owner="tok1", name="train", entrypoint="tools.py:train", config={})
    >>> s.public()["connected"], reg.get(s.id, "tok1", admin=False) is s
    (False, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from flowfed.runtime.lifecycle import TERMINAL, State
from flowfed.runtime.protocol import (
    ConfigMessage,
    ErrorMessage,
    HeartbeatMessage,
    HelloMessage,
    InlineInput,
    LogMessage,
    Message,
    MetricMessage,
    OutputMessage,
    ProgressMessage,
    StartMessage,
    StatusMessage,
    TerminateMessage,
    WelcomeMessage,
)
from flowfed.server import toolchannel as tc

#: Seconds a config update or a new execution waits for a busy or reconnecting tool.
IDLE_WAIT_S = 15.0
#: Seconds the tool gets to answer a config update.
CONFIG_ANSWER_S = 15.0
#: Seconds after a disconnect during which the tool counts as reconnecting (it reconnects
#: after every execution), so requests wait for it instead of failing.
RECONNECT_GRACE_S = 5.0
#: Most sessions one server keeps (the oldest disconnected ones are dropped first).
MAX_SESSIONS = 200
#: Most executions a session remembers.
MAX_EXECUTIONS = 500


class DevSessionError(Exception):
    """A request the session cannot serve: ``status`` is the HTTP status to answer with."""

    def __init__(
        self, status: int, message: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []


@dataclass
class Execution:
    """One test execution: what was asked, and everything the tool reported."""

    id: str
    session_id: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    state: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    progress: float | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    #: Every frame of the execution in order, as sent on the live stream.
    events: list[dict[str, Any]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def ended(self) -> bool:
        """Whether the execution reached Finished, Error or Cancelled."""
        return self.ended_at is not None

    def public(self) -> dict[str, Any]:
        """The JSON view of the execution (``GET .../executions/{id}``)."""
        return {
            "id": self.id,
            "session_id": self.session_id,
            "state": self.state,
            "params": self.params,
            "inputs": sorted(self.inputs),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "transitions": self.transitions,
            "logs": self.logs,
            "metrics": self.metrics,
            "progress": self.progress,
            "outputs": self.outputs,
            "error": self.error,
        }

    def record(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        # Wake every follower, then arm the event again for the next frame.
        self._changed.set()
        self._changed = asyncio.Event()

    def end(self, state: str) -> None:
        self.state = state
        self.ended_at = time.time()
        self.record({"type": "end", "execution": self.public()})

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        """Every event so far, then each new one, until the execution's ``end`` event."""
        sent = 0
        while True:
            waiter = self._changed
            while sent < len(self.events):
                event = self.events[sent]
                sent += 1
                yield event
                if event["type"] == "end":
                    return
            await waiter.wait()


def _output_view(msg: OutputMessage) -> dict[str, Any]:
    view: dict[str, Any] = {
        "kind": msg.kind,
        "size": msg.size,
        "sha256": msg.sha256,
        "media_type": msg.media_type,
    }
    if msg.data is None:
        view["path"] = msg.path  # a path on the developer's machine
        return view
    try:
        raw = msg.content()
    except ValueError as exc:
        view["problem"] = str(exc)
        return view
    if msg.kind == "json":
        view["value"] = json.loads(raw)
    elif msg.kind == "text":
        view["value"] = raw.decode("utf-8", errors="replace")
    return view


@dataclass
class DevSession:
    """One developer's tool attached to the server, its config and its executions."""

    id: str
    owner: str
    name: str
    entrypoint: str
    config: dict[str, Any]
    revision: int = 1
    created_at: float = field(default_factory=time.time)
    tool: dict[str, Any] | None = None
    runtime: dict[str, Any] | None = None
    state: str | None = None
    last_error: dict[str, Any] | None = None
    executions: dict[str, Execution] = field(default_factory=dict)
    _ws: WebSocket | None = field(default=None, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _queue: list[str] = field(default_factory=list, repr=False)
    _current: str | None = field(default=None, repr=False)
    _config_answer: asyncio.Future[ErrorMessage | None] | None = field(default=None, repr=False)
    _pending_revision: int = field(default=0, repr=False)
    _idle: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _seq: int = field(default=0, repr=False)
    _gone_at: float | None = field(default=None, repr=False)

    @property
    def connected(self) -> bool:
        """Whether the tool's runtime channel is open."""
        return self._ws is not None

    @property
    def idle(self) -> bool:
        """Connected, Initialized and running nothing: ready for config or a start."""
        return (
            self._ws is not None
            and self.state == str(State.INITIALIZED)
            and self._current is None
            and self._config_answer is None
        )

    def public(self) -> dict[str, Any]:
        """The JSON view of the session (``GET /api/v1/dev-sessions/{id}``)."""
        return {
            "id": self.id,
            "name": self.name,
            "entrypoint": self.entrypoint,
            "runtime_path": f"/api/v1/dev-sessions/{self.id}/runtime",
            "connected": self.connected,
            "state": self.state,
            "busy": self._current is not None,
            "tool": self.tool,
            "runtime": self.runtime,
            "config": self.config,
            "revision": self.revision,
            "last_error": self.last_error,
            "executions": list(self.executions),
            "created_at": self.created_at,
        }

    # --- the tool's channel -----------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        """Talk to the tool over its (accepted, authenticated) runtime channel until it closes."""
        who = f"dev session {self.id}"
        # The tool reconnects right after each execution; the old channel's close may not
        # have been processed yet.
        for _ in range(40):
            if self._ws is None:
                break
            await asyncio.sleep(0.05)
        if self._ws is not None:
            await tc.refuse(websocket, tc.CONFLICT, "a tool is already connected", who)
            return
        self._ws = websocket
        self.state = None
        beats = asyncio.create_task(tc.heartbeats(websocket, self._lock))
        try:
            first = await tc.receive_message(websocket, who)
            if first is None:
                return
            if not isinstance(first, HelloMessage):
                reason = f"the first message must be 'hello', got {first.type!r}"
                await tc.refuse(websocket, tc.POLICY, reason, who)
                return
            self.tool = first.tool.model_dump(mode="json") if first.tool else None
            self.runtime = first.runtime.model_dump(mode="json")
            await self._send(
                WelcomeMessage(
                    task_id=self.id,
                    run_id="dev",
                    step=self.tool["name"] if self.tool else self.name,
                    node="dev",
                )
            )
            await self._send(ConfigMessage(values=self.config, revision=self.revision))
            while True:
                msg = await tc.receive_message(websocket, who)
                if msg is None:
                    return
                await self._on_message(msg)
        finally:
            beats.cancel()
            self._disconnected()

    def _reachable(self) -> bool:
        if self._ws is not None:
            return True
        return self._gone_at is not None and time.monotonic() - self._gone_at < RECONNECT_GRACE_S

    def _disconnected(self) -> None:
        self._gone_at = time.monotonic()
        self._ws = None
        self.state = None
        self._idle.clear()
        answer = self._config_answer
        if answer is not None and not answer.done():
            answer.set_exception(
                DevSessionError(409, "the tool disconnected before answering the config update")
            )
        current = self.executions.get(self._current or "")
        self._current = None
        if current is not None and not current.ended:
            current.error = {
                "message": "the tool disconnected during the execution",
                "error_type": "ChannelLost",
            }
            current.end(str(State.ERROR))

    async def _send(self, msg: Any) -> bool:
        ws = self._ws
        if ws is None:
            return False
        async with self._lock:
            return await tc.send(ws, msg)

    async def _on_message(self, msg: Message) -> None:
        current = self.executions.get(self._current or "")
        if isinstance(msg, HeartbeatMessage):
            return
        if isinstance(msg, StatusMessage):
            self.state = str(msg.dst)
            if current is not None:
                entry = {"src": msg.src and str(msg.src), "dst": str(msg.dst), "at": msg.at}
                if msg.detail:
                    entry["detail"] = msg.detail
                current.transitions.append(entry)
                current.state = str(msg.dst)
                if msg.dst is State.STARTED:
                    current.started_at = msg.at
                current.record({"type": "status", **entry})
                if msg.dst in TERMINAL:
                    self._current = None
                    current.end(str(msg.dst))
            if msg.dst is State.INITIALIZED:
                await self._dispatch()
            self._signal()
            return
        if current is None:
            self._between_executions(msg)
            return
        data = msg.model_dump(mode="json")
        if isinstance(msg, LogMessage):
            current.logs.append({"level": msg.level, "message": msg.message, "at": msg.at})
        elif isinstance(msg, MetricMessage):
            current.metrics.append(
                {"name": msg.name, "value": msg.value, "step": msg.step, "at": msg.at}
            )
        elif isinstance(msg, ProgressMessage):
            current.progress = msg.fraction
        elif isinstance(msg, OutputMessage):
            current.outputs[msg.name] = _output_view(msg)
            data = {"type": "output", "name": msg.name, **current.outputs[msg.name]}
        elif isinstance(msg, ErrorMessage):
            current.error = {k: v for k, v in data.items() if k not in ("v", "type")}
        current.record(data)

    def _between_executions(self, msg: Message) -> None:
        """Frames outside an execution: config answers, or a failure while connecting."""
        answer = self._config_answer
        if isinstance(msg, ErrorMessage):
            if answer is not None and not answer.done() and not msg.fatal:
                answer.set_result(msg)
                return
            self.last_error = msg.model_dump(mode="json")
        elif (
            isinstance(msg, LogMessage)
            and answer is not None
            and not answer.done()
            and msg.message == f"config revision {self._pending_revision} applied"
        ):
            answer.set_result(None)

    def _signal(self) -> None:
        if self.idle:
            self._idle.set()
        else:
            self._idle.clear()

    async def _wait_idle(self, what: str) -> None:
        deadline = time.monotonic() + IDLE_WAIT_S
        while not self.idle:
            if not self._reachable():
                raise DevSessionError(
                    409,
                    f"cannot {what}: the session's tool is not connected "
                    f"(is `flowfed tool dev` running?)",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DevSessionError(
                    409, f"cannot {what}: the tool stayed busy for {IDLE_WAIT_S:g} s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), min(remaining, 0.5))

    # --- what users ask for -----------------------------------------------------------

    async def update_config(self, values: dict[str, Any]) -> dict[str, Any]:
        """Send new config values; the tool validates them (422 with field errors if bad)."""
        await self._wait_idle("update the config")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[ErrorMessage | None] = loop.create_future()
        self._config_answer = answer
        self._pending_revision = self.revision + 1
        self._signal()
        try:
            await self._send(ConfigMessage(values=values, revision=self._pending_revision))
            try:
                error = await asyncio.wait_for(answer, CONFIG_ANSWER_S)
            except TimeoutError:
                raise DevSessionError(
                    504, f"the tool did not answer the config update within {CONFIG_ANSWER_S:g} s"
                ) from None
        finally:
            self._config_answer = None
            await self._dispatch()  # executions queued while the answer was awaited
            self._signal()
        if error is not None:
            raise DevSessionError(
                422,
                error.message,
                [{"field": d.field, "message": d.message} for d in error.details],
            )
        self.config = dict(values)
        self.revision = self._pending_revision
        return {"revision": self.revision, "values": self.config}

    async def submit(self, params: dict[str, Any], inputs: dict[str, Any]) -> Execution:
        """Queue a test execution; it starts as soon as the tool is idle."""
        if not self._reachable():
            raise DevSessionError(
                409,
                "cannot start an execution: the session's tool is not connected "
                "(is `flowfed tool dev` running?)",
            )
        self._seq += 1
        ex = Execution(f"e{self._seq}", self.id, dict(params), dict(inputs))
        self.executions[ex.id] = ex
        while len(self.executions) > MAX_EXECUTIONS:
            oldest = next(iter(self.executions))
            if oldest == self._current or oldest in self._queue:
                break
            del self.executions[oldest]
        self._queue.append(ex.id)
        if self.idle:
            await self._dispatch()
        return ex

    async def _dispatch(self) -> None:
        if self._current is not None or not self._queue or self._config_answer is not None:
            return
        ex = self.executions.get(self._queue.pop(0))
        if ex is None:
            return
        self._current = ex.id
        ex.state = "sent"
        start = StartMessage(
            hyperparameters=ex.params,
            inputs={name: InlineInput(value=value) for name, value in ex.inputs.items()},
        )
        if not await self._send(start):
            self._current = None
            ex.error = {"message": "the tool disconnected", "error_type": "ChannelLost"}
            ex.end(str(State.ERROR))

    async def close(self) -> None:
        """Ask the tool to stop (``terminate``) and drop the channel."""
        await self._send(TerminateMessage(reason="the dev session was deleted"))


class DevRegistry:
    """The server's dev sessions, by id."""

    def __init__(self) -> None:
        self._sessions: dict[str, DevSession] = {}

    def create(
        self, *, owner: str, name: str, entrypoint: str, config: dict[str, Any]
    ) -> DevSession:
        """A new, not yet connected session owned by the token ``owner``."""
        while len(self._sessions) >= MAX_SESSIONS:
            stale = next((s for s in self._sessions.values() if not s.connected), None)
            if stale is None:
                raise DevSessionError(409, f"this server already holds {MAX_SESSIONS} sessions")
            del self._sessions[stale.id]
        sid = secrets.token_hex(6)
        session = DevSession(sid, owner, name, entrypoint, dict(config))
        self._sessions[sid] = session
        return session

    def get(self, sid: str, owner: str, *, admin: bool) -> DevSession | None:
        """The session, if ``owner`` created it (admins see every session)."""
        session = self._sessions.get(sid)
        if session is None or (session.owner != owner and not admin):
            return None
        return session

    def visible(self, owner: str, *, admin: bool) -> list[DevSession]:
        """The sessions ``owner`` may see, newest first."""
        found = [s for s in self._sessions.values() if admin or s.owner == owner]
        return sorted(found, key=lambda s: s.created_at, reverse=True)

    def remove(self, sid: str) -> None:
        """Forget a session."""
        self._sessions.pop(sid, None)
