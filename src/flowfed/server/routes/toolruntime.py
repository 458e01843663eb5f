"""A production tool's control channel: ``WS /api/v1/tasks/{task_id}/runtime``.

The tool-side engine (``python -m flowfed.runtime --endpoint .../runtime``) connects with
an OAuth2 access token of role ``tool`` whose scope names this task (``task:<id>``). The
server refuses, with a close code and a log line naming the task:

- 4401: no valid token; 4403: a token of another role, or scoped to another task, or the
  task has ended (a tool token opens a channel only while its task lives);
- 4404: no such task; 4409: a runtime is already connected for the task;
- 1008: an unknown message type, another protocol version, an invalid message or a first
  frame that is not ``hello``; 1009: a frame over the size limit.

An accepted tool gets ``welcome`` (task, run, step, node, attempt) and ``config`` (the
step's params), then heartbeats; the channel closes with 4410 when the task ends.
``GET /api/v1/tasks/{task_id}/runtime`` shows the connected runtime (state, hello).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket
from pydantic import BaseModel
from sqlalchemy import select

from flowfed.db import Database
from flowfed.db import models as m
from flowfed.runtime.lifecycle import TERMINAL, State
from flowfed.runtime.protocol import (
    ConfigMessage,
    ErrorMessage,
    HelloMessage,
    StatusMessage,
    WelcomeMessage,
)
from flowfed.server import toolchannel as tc
from flowfed.server.auth import authenticate_token, require_task_access
from flowfed.server.deps import AUTH_ERRORS, NOT_FOUND
from flowfed.server.problems import ProblemError
from flowfed.wording import with_article

router = APIRouter(tags=["tool runtime"])

#: Seconds between checks that the task is still live (its end closes the channel).
TASK_POLL_S = 1.0


@dataclass
class TaskChannel:
    """What the server knows about the runtime connected for one task."""

    task_id: str
    client_id: str
    connected_at: float = field(default_factory=time.time)
    state: str | None = None
    hello: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    frames: int = 0
    last_frame_at: float | None = None


class TaskRuntime(BaseModel):
    """The tool runtime connected for a task."""

    task_id: str
    client_id: str
    connected_at: float
    state: str | None
    hello: dict[str, Any] | None
    error: dict[str, Any] | None
    frames: int
    last_frame_at: float | None


def channels(state: Any) -> dict[str, TaskChannel]:
    """The app's registry of connected task runtimes (created on first use)."""
    reg = getattr(state, "tool_channels", None)
    if reg is None:
        reg = {}
        state.tool_channels = reg
    return reg


def _task_row(db: Database, task_id: str) -> dict[str, Any] | None:
    t, r = m.tasks, m.runs
    with db.engine.connect() as conn:
        row = conn.execute(
            select(
                t.c.id,
                t.c.run_id,
                t.c.step,
                t.c.plan_key,
                t.c.node,
                t.c.attempt,
                t.c.state,
                r.c.spec,
            ).where(t.c.id == task_id, r.c.id == t.c.run_id)
        ).first()
    return dict(row._mapping) if row is not None else None


def _task_state(db: Database, task_id: str) -> str | None:
    with db.engine.connect() as conn:
        state: str | None = conn.execute(
            select(m.tasks.c.state).where(m.tasks.c.id == task_id)
        ).scalar()
    return state


def _step_params(spec: Any, step: str, plan_key: str | None = None) -> dict[str, Any]:
    steps = spec.get("steps") if isinstance(spec, dict) else None
    for s in steps or []:
        if isinstance(s, dict) and s.get("name") == step:
            if isinstance(s.get("tools"), list):
                # A step of several tools: the task's plan key starts with its tool's name
                # within the step ("Prep/clean[hospital-a:breast]").
                s = _tool_of(s["tools"], step, plan_key or "")
            params = s.get("params")
            return dict(params) if isinstance(params, dict) else {}
    return {}


def _tool_of(tools: list[Any], step: str, plan_key: str) -> dict[str, Any]:
    from flowfed.spec.composite import part_names, tools_waiting

    dicts = [t for t in tools if isinstance(t, dict)]
    for t, name in zip(dicts, part_names({"name": step, "tools": dicts}), strict=True):
        if not tools_waiting([name], [plan_key]):
            return t
    return {}


def _ended(state: str | None) -> bool:
    try:
        return state is not None and State(state) in TERMINAL
    except ValueError:
        return False


@router.websocket("/api/v1/tasks/{task_id}/runtime")
async def task_runtime(websocket: WebSocket, task_id: str) -> None:
    """The control channel of the tool running ``task_id`` (see the module docstring)."""
    state = websocket.app.state
    who = f"task {task_id}"
    # Accept before refusing: a close before the handshake reaches the client as a bare
    # HTTP 403, losing the close code that says why.
    await websocket.accept()
    token = tc.bearer(websocket)
    principal = await authenticate_token(state, token, scoped=True) if token else None
    if principal is None:
        await tc.refuse(websocket, tc.UNAUTHORIZED, "missing or invalid bearer token", who)
        return
    who = f"task {task_id} (client {principal.token_id})"
    if principal.role != "tool":
        reason = f"{with_article(principal.role)} token cannot open a tool runtime channel"
        await tc.refuse(websocket, tc.FORBIDDEN, reason, who)
        return
    if f"task:{task_id}" not in principal.scopes:
        scopes = " ".join(principal.scopes)
        reason = f"this tool token is scoped to {scopes}, not task:{task_id}"
        await tc.refuse(websocket, tc.FORBIDDEN, reason, who)
        return
    db: Database = state.db
    task = await asyncio.to_thread(_task_row, db, task_id)
    if task is None:
        await tc.refuse(websocket, tc.NOT_FOUND, f"no task {task_id}", who)
        return
    if _ended(task["state"]):
        reason = f"task {task_id} has ended ({task['state']}): its tool token has expired"
        await tc.refuse(websocket, tc.FORBIDDEN, reason, who)
        return
    registry = channels(state)
    if task_id in registry:
        await tc.refuse(websocket, tc.CONFLICT, "a runtime is already connected", who)
        return
    record = TaskChannel(task_id, principal.token_id)
    registry[task_id] = record
    lock = asyncio.Lock()
    beats = asyncio.create_task(tc.heartbeats(websocket, lock))
    watch = asyncio.create_task(_close_when_task_ends(websocket, db, task_id, who, lock))
    try:
        first = await tc.receive_message(websocket, who)
        if first is None:
            return
        if not isinstance(first, HelloMessage):
            reason = f"the first message must be 'hello', got {first.type!r}"
            await tc.refuse(websocket, tc.POLICY, reason, who)
            return
        record.hello = first.model_dump(mode="json")
        async with lock:
            await tc.send(
                websocket,
                WelcomeMessage(
                    task_id=task_id,
                    run_id=task["run_id"],
                    step=task["step"],
                    node=task["node"],
                    attempt=max(1, int(task["attempt"] or 1)),
                ),
            )
            params = _step_params(task["spec"], task["step"], task.get("plan_key"))
            await tc.send(websocket, ConfigMessage(values=params))
        while True:
            msg = await tc.receive_message(websocket, who)
            if msg is None:
                return
            record.frames += 1
            record.last_frame_at = time.time()
            if isinstance(msg, StatusMessage):
                record.state = str(msg.dst)
            elif isinstance(msg, ErrorMessage):
                record.error = msg.model_dump(mode="json")
    finally:
        beats.cancel()
        watch.cancel()
        registry.pop(task_id, None)
        with contextlib.suppress(RuntimeError):
            await websocket.close()


async def _close_when_task_ends(
    websocket: WebSocket, db: Database, task_id: str, who: str, lock: asyncio.Lock
) -> None:
    while True:
        await asyncio.sleep(TASK_POLL_S)
        state = await asyncio.to_thread(_task_state, db, task_id)
        if state is None or _ended(state):
            reason = f"task {task_id} ended ({state or 'deleted'}): the channel is closed"
            async with lock:
                await tc.refuse(websocket, tc.ENDED, reason, who)
            return


@router.get(
    "/api/v1/tasks/{task_id}/runtime",
    response_model=TaskRuntime,
    dependencies=[Depends(require_task_access)],
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
async def task_runtime_info(request: Request, task_id: str) -> dict[str, Any]:
    """The tool runtime connected for this task: its lifecycle state and ``hello``."""
    record = channels(request.app.state).get(task_id)
    if record is None:
        detail = f"no tool runtime is connected for task '{task_id}'"
        raise ProblemError(404, detail, kind="not-found")
    return record.__dict__
