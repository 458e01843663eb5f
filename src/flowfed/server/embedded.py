"""A flowfed server inside another process: uvicorn in a background thread.

``flowfed run`` uses it to accept node agents while its own engine runs the flow: the
engine gets :attr:`EmbeddedServer.hub` as its node dispatcher. Tests use it for a real
server on loopback without a subprocess.

Example:
    >>> # srv = start_embedded_server("sqlite:///flowfed.db", ".flowfed/artifacts")
    >>> # srv.url  -> 'http://127.0.0.1:41234'; srv.hub.run_task(...); srv.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from flowfed.server.hub import NodeHub
from flowfed.server.settings import ServerSettings


class EmbeddedServerError(RuntimeError):
    """The embedded server did not start; the message says why."""


@dataclass
class EmbeddedServer:
    """A running embedded server: its base URL, app and node hub; :meth:`stop` ends it."""

    url: str
    app: FastAPI
    hub: NodeHub
    _server: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def ws_url(self) -> str:
        """The base URL with ``ws://`` (what ``flowfed node start --server`` also accepts)."""
        return "ws" + self.url[4:]

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down (nodes see the connection close) and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout)


def start_embedded_server(
    db_url: str,
    artifacts_url: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    heartbeat_s: float | None = None,
    max_frame: int | None = None,
    settings: ServerSettings | None = None,
    start_timeout: float = 60.0,
) -> EmbeddedServer:
    """Start ``create_app`` under uvicorn in a daemon thread; return once it serves.

    The database must be at the current schema (``flowfed db upgrade``). ``port=0`` picks
    a free port. ``heartbeat_s``/``max_frame`` tune the node hub.

    Example:
        >>> # srv = start_embedded_server(db_url, str(tmp / "artifacts"))
        >>> # engine = ...(dispatcher=srv.hub); ...; srv.stop()
    """
    import uvicorn

    from flowfed.server.app import create_app

    settings = settings or ServerSettings()
    settings.database_url = db_url
    settings.artifacts_url = artifacts_url
    settings.host = host
    # It serves its own run's nodes beside whatever else uses the database: no lock.
    settings.claim_database = False
    app = create_app(settings)
    hub: NodeHub = app.state.hub
    if heartbeat_s is not None:
        hub.heartbeat_s = heartbeat_s
        hub.grace_s = heartbeat_s * 3
    if max_frame is not None:
        hub.max_frame = max_frame
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they
    # are TCP, and without it small frames wait ~40 ms for delayed ACKs.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        # A frame over the hub's limit must reach the hub (which refuses and logs it
        # naming the node), not be cut off by uvicorn first.
        ws_max_size=hub.max_frame * 2 + 1024,
    )
    server = uvicorn.Server(config)
    failed: list[BaseException] = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported by start_embedded_server
            failed.append(exc)
        finally:
            with contextlib.suppress(Exception):
                loop.close()
            sock.close()

    thread = threading.Thread(target=serve, name="flowfed-embedded-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if failed or not thread.is_alive():
            reason = f"{type(failed[0]).__name__}: {failed[0]}" if failed else "see the log"
            raise EmbeddedServerError(f"the embedded server did not start: {reason}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise EmbeddedServerError(f"the embedded server did not start in {start_timeout:g}s")
        time.sleep(0.02)
    url_host = f"[{host}]" if ":" in host else host
    return EmbeddedServer(f"http://{url_host}:{bound}", app, hub, server, thread)
