"""One node agent's connection, from the WebSocket upgrade to its close.

The hub (:mod:`flowfed.server.hub`) holds the state every connection shares and the
engine's side; this module speaks the protocol of one connection: authenticate the
token, ``register`` then ``resume``, ``welcome``, then heartbeats, telemetry and results
until the node goes (or falls silent past the hub's liveness deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from flowfed.node.protocol import (
    AckMessage,
    HeartbeatMessage,
    NodeProtocolError,
    RegisterMessage,
    ResultMessage,
    ResumeMessage,
    TaskErrorMessage,
    TelemetryMessage,
    TerminateMessage,
    WelcomeMessage,
    parse_node_message,
)
from flowfed.server.hub import RECHECK_S, NodeHub, log
from flowfed.server.node_conn import Connection
from flowfed.server.node_store import node_for_token


async def serve_node(hub: NodeHub, ws: WebSocket) -> None:
    """Handle one node connection from upgrade to close."""
    auth = ws.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    db = hub.db
    name = await asyncio.to_thread(node_for_token, db, token) if db and token else None
    if name is None:
        hint = (token[:8] + "...") if token else "no token"
        hub.refuse(f"token {hint} from {_peer(ws)}", "invalid node token")
        await ws.close(code=4401)
        return
    await ws.accept()
    try:
        first = await _receive(hub, ws, name, timeout=hub.grace_s + 10)
        if not isinstance(first, RegisterMessage):
            hub.refuse(f"node '{name}'", "the first frame must be 'register'")
            await ws.close(code=1008, reason="register first")
            return
        if first.node != name:
            hub.refuse(f"node '{name}'", f"its token cannot register as node '{first.node}'")
            await ws.close(code=4403, reason="a node token registers only its own node")
            return
        resume = await _receive(hub, ws, name, timeout=hub.grace_s + 10)
        if not isinstance(resume, ResumeMessage):
            hub.refuse(f"node '{name}'", "the second frame must be 'resume'")
            await ws.close(code=1008, reason="resume expected")
            return
    except (TimeoutError, NodeProtocolError, WebSocketDisconnect) as exc:
        if isinstance(exc, NodeProtocolError):
            hub.refuse(f"node '{name}'", str(exc))
        with contextlib.suppress(Exception):
            await ws.close(code=1008)
        return
    conn = Connection(name, ws, asyncio.get_running_loop())
    await asyncio.to_thread(hub._registered, name, first.datasets)
    old, foreign = hub._connect(conn, resume)
    if old is not None:
        with contextlib.suppress(Exception):
            await old.ws.close(code=4409, reason="replaced by a new connection")
    await conn.send(WelcomeMessage(node=name, heartbeat_s=hub.heartbeat_s, max_frame=hub.max_frame))
    for task_id in foreign:
        # A task the engine gave up on (or never heard of): tell the node to drop it.
        await conn.send(TerminateMessage(task_id=task_id, reason="unknown task"))
    log.info("node '%s' connected with %d dataset(s)", name, len(first.datasets))
    try:
        while True:
            try:
                msg = await _receive(hub, ws, name, timeout=hub.grace_s)
            except NodeProtocolError as exc:
                hub.refuse(f"node '{name}'", str(exc))
                continue
            hub._seen(name)
            if isinstance(msg, HeartbeatMessage):
                observer = hub.on_heartbeat
                if observer is not None:
                    with contextlib.suppress(Exception):
                        observer(name, msg.seq)
                await conn.send(HeartbeatMessage(seq=msg.seq))
                if time.monotonic() - conn.checked > RECHECK_S:
                    conn.checked = time.monotonic()
                    if not await asyncio.to_thread(_still_registered, hub, name, token):
                        # `flowfed nodes remove` (or a new token): the session ends.
                        hub.refuse(f"node '{name}'", "its credentials were revoked")
                        await ws.close(code=4401, reason="node credentials revoked")
                        break
            elif isinstance(msg, TelemetryMessage):
                hub._telemetry(conn, msg)
            elif isinstance(msg, (ResultMessage, TaskErrorMessage)):
                if hub._finished(conn, msg):
                    await conn.send(AckMessage(task_id=msg.task_id))
            else:
                hub.refuse(f"node '{name}'", f"a node may not send {msg.type!r}")
    except (TimeoutError, WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub._disconnect(conn)
        with contextlib.suppress(Exception):
            await ws.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(hub._mark_offline, name)
        log.info("node '%s' disconnected", name)


async def _receive(hub: NodeHub, ws: WebSocket, name: str, timeout: float) -> Any:
    message = await asyncio.wait_for(ws.receive(), timeout)
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    data = message.get("text")
    if data is None:
        data = message.get("bytes") or b""
    if len(data) > hub.max_frame:
        raise NodeProtocolError(f"frame of {len(data)} bytes is over the limit of {hub.max_frame}")
    return parse_node_message(data, hub.max_frame)


def _still_registered(hub: NodeHub, name: str, token: str) -> bool:
    db = hub.db
    if db is None:
        return False
    try:
        return node_for_token(db, token) == name
    except Exception:
        return True  # a database hiccup is not a revocation


def _peer(ws: WebSocket) -> str:
    client = ws.client
    return f"{client.host}:{client.port}" if client else "unknown peer"
