"""Development-mode sessions over REST, SSE and WebSocket (see :mod:`flowfed.server.devtools`).

Every handler is a coroutine: sessions live on the event loop with their channels, so no
handler may touch them from the thread pool.

- ``POST /api/v1/dev-sessions``: open a session (``flowfed tool dev`` does this);
- ``GET /api/v1/dev-sessions``, ``GET /api/v1/dev-sessions/{id}``: list and show;
- ``DELETE /api/v1/dev-sessions/{id}``: terminate the tool and forget the session;
- ``POST /api/v1/dev-sessions/{id}/config``: replace the config (422 names bad fields);
- ``POST /api/v1/dev-sessions/{id}/executions``: run the tool on params and inline inputs;
- ``GET /api/v1/dev-sessions/{id}/executions[/{eid}]``: state, logs, metrics, outputs;
- ``GET /api/v1/dev-sessions/{id}/executions/{eid}/events``: the live output (SSE);
- ``WS /api/v1/dev-sessions/{id}/runtime``: the tool's runtime channel.

A session is seen only by the token that opened it (and admins); others get 404.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from flowfed.server import toolchannel as tc
from flowfed.server.auth import Principal, authenticate_token, require_principal
from flowfed.server.deps import AUTH_ERRORS, BAD_REQUEST, CONFLICT, NOT_FOUND, _problem
from flowfed.server.devtools import DevRegistry, DevSession, DevSessionError, Execution
from flowfed.server.problems import ProblemError

router = APIRouter(
    prefix="/api/v1/dev-sessions",
    tags=["dev sessions"],
    responses={**AUTH_ERRORS, **BAD_REQUEST},
)


class DevSessionCreate(BaseModel):
    """A new dev session: the tool's entry point and its first config."""

    model_config = ConfigDict(extra="forbid")

    entrypoint: str = Field(min_length=1, max_length=1000, examples=["tools.py:train"])
    name: str = Field(default="", max_length=255)
    config: dict[str, Any] = Field(default_factory=dict)


class ConfigUpdate(BaseModel):
    """New config values for the tool (validated by the tool against its schema)."""

    model_config = ConfigDict(extra="forbid")

    values: dict[str, Any] = Field(default_factory=dict)


class ExecutionCreate(BaseModel):
    """A test execution: hyperparameters (merged over the config) and inline JSON inputs."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)


class DevSessionOut(BaseModel):
    """A dev session as the API shows it."""

    id: str
    name: str
    entrypoint: str
    runtime_path: str
    connected: bool
    state: str | None
    busy: bool
    tool: dict[str, Any] | None
    runtime: dict[str, Any] | None
    config: dict[str, Any]
    revision: int
    last_error: dict[str, Any] | None
    executions: list[str]
    created_at: float


class ConfigOut(BaseModel):
    """The config the tool accepted."""

    revision: int
    values: dict[str, Any]


class ExecutionOut(BaseModel):
    """A test execution: its state and everything the tool reported."""

    id: str
    session_id: str
    state: str
    params: dict[str, Any]
    inputs: list[str]
    created_at: float
    started_at: float | None
    ended_at: float | None
    transitions: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    progress: float | None
    outputs: dict[str, dict[str, Any]]
    error: dict[str, Any] | None


TOOL_ERRORS: dict[int | str, dict[str, Any]] = {
    **CONFLICT,
    **NOT_FOUND,
    422: _problem("The tool rejected the config (each error names its field)"),
    504: _problem("The tool did not answer in time"),
}


def registry(state: Any) -> DevRegistry:
    """The app's dev-session registry (created on first use)."""
    reg = getattr(state, "dev_sessions", None)
    if reg is None:
        reg = DevRegistry()
        state.dev_sessions = reg
    return reg


def _session(request: Request, principal: Principal, sid: str) -> DevSession:
    session = registry(request.app.state).get(sid, principal.token_id, admin=principal.is_admin)
    if session is None:
        raise ProblemError(404, f"no dev session '{sid}'", kind="not-found")
    return session


def _execution(session: DevSession, eid: str) -> Execution:
    ex = session.executions.get(eid)
    if ex is None:
        detail = f"dev session {session.id} has no execution '{eid}'"
        raise ProblemError(404, detail, kind="not-found")
    return ex


def _problem_of(exc: DevSessionError) -> ProblemError:
    kind = {409: "conflict", 422: "invalid-config", 504: "tool-timeout"}.get(exc.status)
    return ProblemError(exc.status, exc.message, kind=kind, errors=exc.errors or None)


@router.post("", response_model=DevSessionOut, status_code=201, responses=CONFLICT)
async def create_session(
    request: Request, body: DevSessionCreate, principal: Principal = Depends(require_principal)
) -> dict[str, Any]:
    """Open a session; connect the tool to its ``runtime_path`` (``flowfed tool dev``)."""
    try:
        session = registry(request.app.state).create(
            owner=principal.token_id,
            name=body.name or body.entrypoint.rpartition(":")[2],
            entrypoint=body.entrypoint,
            config=body.config,
        )
    except DevSessionError as exc:
        raise _problem_of(exc) from None
    return session.public()


@router.get("", response_model=list[DevSessionOut])
async def list_sessions(
    request: Request, principal: Principal = Depends(require_principal)
) -> list[dict[str, Any]]:
    """The caller's sessions (an admin's: all), newest first."""
    reg = registry(request.app.state)
    return [s.public() for s in reg.visible(principal.token_id, admin=principal.is_admin)]


@router.get("/{sid}", response_model=DevSessionOut, responses=NOT_FOUND)
async def show_session(
    request: Request, sid: str, principal: Principal = Depends(require_principal)
) -> dict[str, Any]:
    """A session: connection, tool, lifecycle state, config and execution ids."""
    return _session(request, principal, sid).public()


@router.delete("/{sid}", status_code=204, responses=NOT_FOUND)
async def delete_session(
    request: Request, sid: str, principal: Principal = Depends(require_principal)
) -> None:
    """Terminate the session's tool (``flowfed tool dev`` then exits) and forget it."""
    session = _session(request, principal, sid)
    await session.close()
    registry(request.app.state).remove(sid)


@router.post("/{sid}/config", response_model=ConfigOut, responses=TOOL_ERRORS)
async def update_config(
    request: Request,
    sid: str,
    body: ConfigUpdate,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    """Replace the tool's config; the tool validates it against its schema first."""
    session = _session(request, principal, sid)
    try:
        return await session.update_config(body.values)
    except DevSessionError as exc:
        raise _problem_of(exc) from None


@router.post(
    "/{sid}/executions", response_model=ExecutionOut, status_code=202, responses=TOOL_ERRORS
)
async def create_execution(
    request: Request,
    sid: str,
    body: ExecutionCreate,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    """Start a test execution (queued while the tool is busy); returns its id at once."""
    session = _session(request, principal, sid)
    try:
        ex = await session.submit(body.params, body.inputs)
    except DevSessionError as exc:
        raise _problem_of(exc) from None
    return ex.public()


@router.get("/{sid}/executions", response_model=list[ExecutionOut], responses=NOT_FOUND)
async def list_executions(
    request: Request, sid: str, principal: Principal = Depends(require_principal)
) -> list[dict[str, Any]]:
    """The session's executions, oldest first."""
    return [ex.public() for ex in _session(request, principal, sid).executions.values()]


@router.get("/{sid}/executions/{eid}", response_model=ExecutionOut, responses=NOT_FOUND)
async def show_execution(
    request: Request, sid: str, eid: str, principal: Principal = Depends(require_principal)
) -> dict[str, Any]:
    """One execution: state, transitions, logs, metrics, outputs, error."""
    return _execution(_session(request, principal, sid), eid).public()


@router.get(
    "/{sid}/executions/{eid}/events",
    responses={**NOT_FOUND, 200: {"content": {"text/event-stream": {}}}},
    response_class=StreamingResponse,
)
async def follow_execution(
    request: Request, sid: str, eid: str, principal: Principal = Depends(require_principal)
) -> StreamingResponse:
    """The execution's live output as Server-Sent Events, from its first frame to ``end``.

    Each event's name is the frame type (``status``, ``log``, ``metric``, ``progress``,
    ``output``, ``error``) and its data the frame as JSON; the last is ``end`` with the
    whole execution.
    """
    ex = _execution(_session(request, principal, sid), eid)

    async def stream() -> AsyncIterator[bytes]:
        async for event in ex.follow():
            if await request.is_disconnected():
                return
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.websocket("/{sid}/runtime")
async def session_runtime(websocket: WebSocket, sid: str) -> None:
    """The runtime channel of the session's tool (the token that opened the session)."""
    who = f"dev session {sid}"
    await websocket.accept()
    token = tc.bearer(websocket)
    state = websocket.app.state
    principal = await authenticate_token(state, token, scoped=False) if token else None
    if principal is None:
        await tc.refuse(websocket, tc.UNAUTHORIZED, "missing or invalid bearer token", who)
        return
    session = registry(state).get(sid, principal.token_id, admin=principal.is_admin)
    if session is None:
        await tc.refuse(websocket, tc.NOT_FOUND, f"no dev session {sid} for this token", who)
        return
    await session.serve(websocket)
