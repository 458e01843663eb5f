"""The control-plane server: ``create_app(settings)`` builds the FastAPI application.

Start-up (the lifespan) opens the database and refuses an out-of-date schema, imports the
configured tool modules, and connects the event bus (``app.state.bus``) and the run
manager (``app.state.runs``). ``flowfed server`` runs :func:`check_startup` before
binding, so a bad configuration ends the command with one paragraph and exit code 2.

Example:
    >>> # import uvicorn
    >>> # uvicorn.run(create_app(ServerSettings(imports=["tools.py"])), port=8000)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowfed import __version__
from flowfed.db import Database
from flowfed.server.metrics import MetricsMiddleware, ServerMetrics
from flowfed.server.settings import ServerSettings

# Re-exported: embedding code and the CLI import them from here.
from flowfed.server.startup import (
    StartupError,
    bus_ok,
    check_startup,
    check_tls,
    close_bus,
    hold_database,
    open_bus,
)
from flowfed.spec.limits import MAX_DEPTH, json_depth_exceeds

__all__ = [
    "BodyLimitMiddleware",
    "StartupError",
    "bus_ok",
    "check_startup",
    "check_tls",
    "close_bus",
    "create_app",
    "open_bus",
]

log = logging.getLogger("flowfed.server")


def _may_be_json(scope: Scope) -> bool:
    """Whether FastAPI would parse this request's body as JSON (JSON or no content type)."""
    ctype = dict(scope.get("headers") or []).get(b"content-type", b"").lower()
    return not ctype or b"json" in ctype


class BodyLimitMiddleware:
    """413 for request bodies over the limit, by Content-Length or by the bytes streamed;
    422 for a JSON body nested deeper than :data:`flowfed.spec.limits.MAX_DEPTH`.

    The body is read here, up to the limit, before the app sees it: a chunked upload that
    never declares its size is cut off at ``max_bytes`` instead of being buffered whole.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._reject(scope, send)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away: let the app see the disconnect.
                pending: list[Message] = [message]
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._reject(scope, send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        else:
            body = b"".join(chunks)
            if _may_be_json(scope) and json_depth_exceeds(body):
                # Refused before json.loads and pydantic recurse into it (a 500 otherwise).
                await self._reject(
                    scope,
                    send,
                    422,
                    "input-limit",
                    "Input over a limit",
                    f"the JSON body nests objects and arrays deeper than the limit of "
                    f"{MAX_DEPTH} levels",
                    limit="depth",
                )
                return
            pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(
        self,
        scope: Scope,
        send: Send,
        status: int = 413,
        kind: str = "body-too-large",
        title: str = "Content Too Large",
        detail: str = "",
        limit: str = "size",
    ) -> None:
        body = json.dumps(
            {
                "type": f"urn:flowfed:problem:{kind}",
                "title": title,
                "status": status,
                "detail": detail
                or f"the request body is larger than the server's limit of {self.max_bytes} bytes",
                "instance": scope.get("path"),
                "limit": limit,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def start_triggers(db: Database, manager: Any, settings: ServerSettings) -> Any:
    """The trigger service, polling in the background (None when the interval is 0)."""
    from flowfed.server.triggers.model import clock_from_env
    from flowfed.server.triggers.service import TriggerService, stored_flow_starter

    if settings.trigger_interval <= 0:
        return None
    service = TriggerService(
        db,
        stored_flow_starter(db, manager),
        clock=clock_from_env(),
        interval=settings.trigger_interval,
    )
    service.run_in_background()
    return service


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI application for ``settings`` (resources open in its lifespan)."""
    from flowfed.server import events
    from flowfed.server.auth import Forbidden
    from flowfed.server.hub import NodeHub
    from flowfed.server.logredact import install_log_redaction
    from flowfed.server.oauth import load_signing_key
    from flowfed.server.problems import install_handlers, problem_response
    from flowfed.server.routes import (
        artifacts,
        flows,
        node_admin,
        oauth,
        runs,
        seed,
        service,
        tasks,
        tools,
    )
    from flowfed.server.routes import auth as auth_routes
    from flowfed.server.routes import templates as template_routes
    from flowfed.server.routes import triggers as trigger_routes
    from flowfed.server.routes.nodes import router as nodes_router
    from flowfed.server.routes.nodes import ws_router as nodes_ws_router
    from flowfed.server.runs import RunManager

    # Before anything logs: bearer tokens reach the server in query strings (the event
    # WebSocket's ?access_token=), which uvicorn's access log would write out whole.
    install_log_redaction()
    settings = dataclasses.replace(settings or ServerSettings())
    # Resolved once: the environment read at start-up is what every request uses.
    settings.database_url = settings.resolved_database_url()
    settings.artifacts_url = settings.resolved_artifacts_url()
    metrics = ServerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import concurrent.futures

        from flowfed.server.settings import REQUEST_THREADS

        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="flowfed-req")
        )
        db = check_startup(settings)
        lock = None
        try:
            if settings.claim_database:
                lock = hold_database(db, settings.broker_url)
            # check_startup read it already: this cannot fail but on a vanished file.
            signing_key = load_signing_key(db, settings.signing_key_file)
            bus = open_bus(settings.broker_url)
        except Exception:
            if lock is not None:
                lock.release()
            db.close()
            raise
        manager = RunManager(
            db,
            settings.resolved_artifacts_url(),
            bus.publish,
            metrics,
            settings.executor,
            dispatcher=app.state.hub,
            task_timeout=settings.task_timeout,
        )
        app.state.db = db
        app.state.signing_key = signing_key
        app.state.bus = bus
        app.state.runs = manager
        app.state.triggers = start_triggers(db, manager, settings)
        # Node agents' hub: created with the app (so an embedding process can hand it to
        # an engine before start-up), attached to this loop and database here.
        app.state.hub.attach(db, bus.publish, asyncio.get_running_loop())
        try:
            yield
        finally:
            app.state.hub.detach()
            if app.state.triggers is not None:
                app.state.triggers.stop()
            # Normally drained already (SIGTERM, flowfed.server.serve); else now.
            await asyncio.to_thread(manager.drain, settings.drain_timeout)
            close_bus(bus)
            if lock is not None:
                lock.release()
            db.close()

    app = FastAPI(
        title="flowfed",
        version=__version__,
        summary="Control plane: flows, runs, tasks, artifacts, tools and live run events.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.hub = NodeHub(liveness_s=settings.node_liveness or None)
    install_handlers(app)

    async def on_forbidden(request: Any, exc: Exception) -> Any:
        # No `instance`: the body must not differ between a task that exists and one
        # that does not (see auth.Forbidden).
        assert isinstance(exc, Forbidden)
        return problem_response(None, 403, exc.detail, kind=exc.kind)

    app.add_exception_handler(Forbidden, on_forbidden)
    app.include_router(service.public)
    app.include_router(oauth.router)
    app.include_router(auth_routes.router)
    app.include_router(service.protected)
    # Seed 003's fixed paths (/flows/execute, /flows/executions...) before /flows/{name}.
    app.include_router(seed.router)
    app.include_router(flows.router)
    app.include_router(runs.router)
    app.include_router(tasks.router)
    app.include_router(artifacts.router)
    app.include_router(tools.router)
    app.include_router(trigger_routes.router)
    from flowfed.server.routes import models as model_routes

    app.include_router(model_routes.router)
    app.include_router(events.router)
    app.include_router(nodes_router)
    app.include_router(node_admin.router)
    app.include_router(nodes_ws_router)
    # Tool runtimes: production tools per task, development-mode sessions (flowfed tool dev).
    from flowfed.server.devtools import DevRegistry
    from flowfed.server.routes import devtools, toolruntime

    app.state.dev_sessions = DevRegistry()
    app.state.tool_channels = {}
    app.include_router(toolruntime.router)
    app.include_router(devtools.router)
    app.include_router(template_routes.router)
    # The dashboard: / and /ui/* (static files, no auth: the page signs in itself).
    from flowfed import ui

    ui.mount(app)
    # Outermost last: metrics see every response, including 413s from the body limit.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
