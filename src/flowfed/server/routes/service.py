"""Liveness, readiness, metrics and the caller's identity."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import text

from flowfed.server.auth import Principal, require_principal
from flowfed.server.deps import AUTH_ERRORS, db_of
from flowfed.server.problems import Problem, ProblemError
from flowfed.server.schemas import Health, Me, Ready

public = APIRouter(tags=["service"])
protected = APIRouter(
    tags=["service"], dependencies=[Depends(require_principal)], responses=AUTH_ERRORS
)


@public.get("/health", response_model=Health)
async def health() -> Health:
    """Liveness: the process answers (no dependency is checked, no token needed)."""
    return Health()


@public.get(
    "/ready",
    response_model=Ready,
    responses={503: {"model": Problem, "description": "A dependency is not available"}},
)
async def ready(request: Request) -> Ready:
    """Readiness: the database answers ``SELECT 1`` and the event bus answers (no token)."""
    db = db_of(request)

    def ping() -> None:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(asyncio.to_thread(ping), timeout=5.0)
        database = "ok"
    except Exception as exc:
        database = f"unavailable: {type(exc).__name__}"
    from flowfed.server.startup import bus_ok

    bus_obj = getattr(request.app.state, "bus", None)
    healthy = bus_obj is not None and await asyncio.to_thread(bus_ok, bus_obj)
    bus = "ok" if healthy else "unavailable"
    manager = getattr(request.app.state, "runs", None)
    if manager is not None and manager.draining:
        # SIGTERM: a load balancer sends new work elsewhere while the runs are handed over.
        raise ProblemError(
            503,
            "the server is not ready: draining (shutting down, handing its runs over)",
            kind="not-ready",
            extra={"database": database, "bus": bus, "draining": True},
        )
    if database != "ok" or bus != "ok":
        raise ProblemError(
            503,
            "the server is not ready: "
            + ", ".join(f"{k} {v}" for k, v in (("database", database), ("bus", bus)) if v != "ok"),
            kind="not-ready",
            extra={"database": database, "bus": bus},
        )
    return Ready(database=database, bus=bus)


@protected.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests by route/method/status, runs started/finished/active."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@protected.get("/api/v1/me", response_model=Me)
async def me(principal: Principal = Depends(require_principal)) -> Me:
    """The token the request authenticated with (id, name, role)."""
    return Me(token_id=principal.token_id, name=principal.name, role=principal.role)
