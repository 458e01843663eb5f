"""The platform end of a tool runtime's WebSocket: framing limits, refusals, heartbeats.

Two routes speak the runtime protocol (:mod:`flowfed.runtime.protocol`) with a tool:
``/api/v1/tasks/{task_id}/runtime`` (a production tool, OAuth2 token of role ``tool``
scoped ``task:<id>``) and ``/api/v1/dev-sessions/{id}/runtime`` (``flowfed tool dev``).
Both read frames through :func:`receive_message`, which refuses (closes the socket and logs
who it came from) a frame over :data:`MAX_FRAME` bytes, an unknown message type, another
protocol version or an invalid message, and keep the tool's idle timer alive with
:func:`heartbeats`.

Example:
    >>> close_reason("x" * 300)[-3:], len(close_reason("x" * 300).encode()) <= 123
    ('...', True)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from flowfed.runtime.protocol import HeartbeatMessage, Message, ProtocolError, dump_message

log = logging.getLogger("flowfed.server.tools")

#: Largest frame a tool may send (bytes; ``$FLOWFED_TOOL_MAX_FRAME``). Big outputs travel
#: by path or artifact upload, never inline, so 8 MiB is generous; it stays under
#: uvicorn's own 16 MiB WebSocket limit so that the refusal is ours, logged with its task.
MAX_FRAME = int(os.environ.get("FLOWFED_TOOL_MAX_FRAME", str(8 * 1024 * 1024)))
#: Seconds between the platform's heartbeats (the tool side's idle timeout is longer).
HEARTBEAT_S = float(os.environ.get("FLOWFED_TOOL_HEARTBEAT_S", "5"))

#: Close codes (RFC 6455 §7.4.1 and the 4xxx range for applications).
POLICY = 1008  # unknown type, bad version, invalid message
TOO_BIG = 1009
UNAUTHORIZED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
CONFLICT = 4409
ENDED = 4410


def close_reason(text: str) -> str:
    """``text`` cut to the 123 bytes a close frame's reason may hold."""
    raw = text.encode()
    if len(raw) <= 123:
        return text
    return raw[:120].decode(errors="ignore") + "..."


def bearer(websocket: WebSocket) -> str | None:
    """The bearer token of the upgrade request (header, else ``?access_token=``)."""
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return websocket.query_params.get("access_token") or None


async def refuse(websocket: WebSocket, code: int, reason: str, who: str) -> None:
    """Log the refused attempt with ``who`` (task or session), then close with ``code``."""
    log.warning("tool runtime refused: %s: %s (close %d)", who, reason, code)
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code=code, reason=close_reason(reason))


async def receive_message(websocket: WebSocket, who: str) -> Message | None:
    """The next message from the tool; None once the socket is gone or was refused.

    An oversized frame closes with 1009, anything :func:`parse_message` rejects with 1008;
    both are logged with ``who``.
    """
    from flowfed.runtime.protocol import parse_message

    try:
        event = await websocket.receive()
    except (WebSocketDisconnect, RuntimeError):
        return None
    if event["type"] == "websocket.disconnect":
        return None
    frame: str | bytes | None = event.get("text")
    if frame is None:
        frame = event.get("bytes") or b""
    size = len(frame.encode()) if isinstance(frame, str) else len(frame)
    if size > MAX_FRAME:
        await refuse(
            websocket, TOO_BIG, f"frame of {size} bytes is over the limit of {MAX_FRAME}", who
        )
        return None
    try:
        return parse_message(frame)
    except ProtocolError as exc:
        await refuse(websocket, POLICY, str(exc), who)
        return None


async def send(websocket: WebSocket, msg: Any) -> bool:
    """Send one message; False if the socket is already closed."""
    try:
        await websocket.send_text(dump_message(msg))
    except (WebSocketDisconnect, RuntimeError):
        return False
    return True


async def heartbeats(websocket: WebSocket, lock: asyncio.Lock) -> None:
    """Send a heartbeat every :data:`HEARTBEAT_S` seconds until the socket closes."""
    seq = 0
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        seq += 1
        async with lock:
            if not await send(websocket, HeartbeatMessage(seq=seq)):
                return
