"""Live run events over WebSocket: ``/api/v1/runs/{run_id}/events``.

A watcher first receives every recorded event after the id it names (``?after=SEQ``, 0
by default: the whole history), then the live stream, with no gap and no duplicate: the
handler subscribes to the bus *before* reading the history, so an event committed in
between arrives twice and is dropped by its sequence number. Events are announced only
after they are committed, so the history never lags the stream. The socket closes with
1000 after the run's final event.

Messages are JSON: ``{"id": SEQ, "run_id", "kind", "task_id", "ts", "payload": {...}}``
where ``kind`` is ``run``, ``transition``, ``log``, ``metric``, ``progress``, ``retry``,
``resources`` (a task's ``wall_s``, ``cpu_s``, ``peak_rss_mb`` and ``progress`` counts,
about once a second while it runs and once at its end) or ``waiting`` (a task waits for
its offline ``node``; ``node`` null when the wait is over).

Authentication: ``Authorization: Bearer TOKEN``, ``?access_token=TOKEN``, or (for
browsers, which cannot set headers on a WebSocket and should not put secrets in URLs) a
first message ``{"type": "auth", "token": "..."}`` within :data:`AUTH_TIMEOUT_S`
seconds. Close codes: 4401 unauthenticated, 4403 a node or tool token, 4408 no
credentials in time, 4404 unknown
run, 1003 for a client message that is not JSON, 1000 at the end.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

router = APIRouter()

TERMINAL_RUN_STATES = frozenset({"success", "failed", "cancelled"})

#: Seconds without a bus event after which a watcher reads the event log itself.
CATCH_UP_S = 2.0

#: How long a watcher without a token in its request has to send its auth message.
AUTH_TIMEOUT_S = 10.0


def message(event: dict[str, Any]) -> dict[str, Any]:
    """The wire form of a recorded or published event."""
    return {
        "id": event["seq"],
        "run_id": event["run_id"],
        "kind": event["kind"],
        "task_id": event.get("task_id"),
        "ts": event["ts"],
        "payload": event["payload"],
    }


def _final(event: dict[str, Any]) -> bool:
    return event["kind"] == "run" and event["payload"].get("status") in TERMINAL_RUN_STATES


@router.websocket("/api/v1/runs/{run_id}/events")
async def run_events(websocket: WebSocket, run_id: str, after: int = 0) -> None:
    """Stream a run's events: history after ``after``, then live, then close."""
    from flowfed.server.auth import authenticate_token, websocket_refusal

    state = websocket.app.state
    token = _bearer(websocket)
    # Accept before refusing: a close before the handshake completes reaches the client as
    # a bare HTTP 403, losing the close code that says why.
    await websocket.accept()
    if token is None:
        token = await _auth_message(websocket)
        if token is None:
            return
    principal = await authenticate_token(state, token, scoped=True)
    refusal = websocket_refusal(principal)
    if refusal is not None:
        await websocket.close(code=refusal.code, reason=refusal.reason)
        return
    db = state.db
    run = await asyncio.to_thread(db.get_run, run_id)
    if run is None:
        await websocket.close(code=4404, reason=f"no run {run_id}")
        return
    run_id = run["id"]
    sub = state.bus.subscribe(run_id)
    reader = asyncio.create_task(_read_client(websocket))
    try:
        await sub.wait_ready()
        last = after
        history = await asyncio.to_thread(db.run_events, run_id, after)
        for event in history:
            await websocket.send_json(message(event))
            last = event["seq"]
            if _final(event):
                return
        if run["status"] in TERMINAL_RUN_STATES and not history:
            # A run recorded without events (started by the CLI): nothing more will come.
            return
        getter: asyncio.Task[Any] | None = None
        while True:
            if getter is None:
                getter = asyncio.create_task(sub.get())
            done, _ = await asyncio.wait(
                {getter, reader}, timeout=CATCH_UP_S, return_when=asyncio.FIRST_COMPLETED
            )
            if reader in done:
                getter.cancel()
                return
            if not done:
                # Nothing from the bus for a while: the event log is the truth. A run that
                # ended where this server's bus cannot hear it (another process, a broker
                # hiccup, a run marked failed without an event) still ends the watch.
                caught_up, ended = await _catch_up(websocket, db, run_id, last)
                last = caught_up
                if ended:
                    getter.cancel()
                    return
                continue
            event, getter = getter.result(), None
            if event["seq"] <= last:
                continue  # already sent from the history
            if event["seq"] > last + 1:
                # Published out of order relative to our history read: fill from the log.
                for missed in await asyncio.to_thread(db.run_events, run_id, last):
                    if missed["seq"] >= event["seq"]:
                        break
                    await websocket.send_json(message(missed))
                    last = missed["seq"]
            await websocket.send_json(message(event))
            last = event["seq"]
            if _final(event):
                return
    except WebSocketDisconnect:
        return
    finally:
        sub.close()
        reader.cancel()
        if websocket.client_state.name == "CONNECTED":
            await websocket.close(code=1000)


async def _catch_up(websocket: WebSocket, db: Any, run_id: str, last: int) -> tuple[int, bool]:
    """Send what the log holds after ``last``; (the last id sent, whether the run ended)."""
    for event in await asyncio.to_thread(db.run_events, run_id, last):
        await websocket.send_json(message(event))
        last = event["seq"]
        if _final(event):
            return last, True
    run = await asyncio.to_thread(db.get_run, run_id)
    return last, run is None or run["status"] in TERMINAL_RUN_STATES


async def _read_client(websocket: WebSocket) -> None:
    """Watchers need not send anything; anything they send must be JSON (pings)."""
    while True:
        try:
            text = await websocket.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            return
        try:
            json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            await websocket.close(code=1003, reason="messages must be JSON")
            return


async def _auth_message(websocket: WebSocket) -> str | None:
    """Wait for ``{"type": "auth", "token": ...}``; close the socket (and None) otherwise."""
    try:
        text = await asyncio.wait_for(websocket.receive_text(), AUTH_TIMEOUT_S)
    except TimeoutError:
        await websocket.close(code=4408, reason=f"no credentials within {AUTH_TIMEOUT_S:g}s")
        return None
    except (WebSocketDisconnect, RuntimeError):
        return None
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        await websocket.close(code=1003, reason="messages must be JSON")
        return None
    token = msg.get("token") if isinstance(msg, dict) and msg.get("type") == "auth" else None
    if not isinstance(token, str) or not token:
        await websocket.close(code=4401, reason='expected {"type": "auth", "token": ...} first')
        return None
    return token


def _bearer(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return websocket.query_params.get("access_token") or None
