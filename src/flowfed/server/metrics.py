"""Prometheus metrics of one app, in its own registry (several apps never share counters)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ServerMetrics:
    """Request and run counters exposed at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "flowfed_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flowfed_http_request_duration_seconds",
            "HTTP request handling time by route template and method.",
            ["route", "method"],
            registry=self.registry,
        )
        self.runs_started = Counter(
            "flowfed_runs_started", "Runs started by this server.", registry=self.registry
        )
        self.runs_finished = Counter(
            "flowfed_runs_finished",
            "Runs of this server that ended, by final status.",
            ["status"],
            registry=self.registry,
        )
        self.runs_active = Gauge(
            "flowfed_runs_active", "Runs executing on this server now.", registry=self.registry
        )

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request by its route *template* (bounded label cardinality)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_template(scope)
            method = scope.get("method", "?")
            self.metrics.requests.labels(route, method, str(status["code"])).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - t0)


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths are lumped together: raw paths would let clients mint label values.
    return str(path) if path else "<unmatched>"
