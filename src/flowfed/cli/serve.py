"""``flowfed server``: serve the REST and WebSocket API with uvicorn, in one process.

Example:
    >>> # flowfed server --port 8000 --import flowfed.tools.library
"""

from __future__ import annotations

from typing import Annotated

import typer

from flowfed.cli.common import DatabaseUrlOpt, ImportOpt, fail, local_only

server_app = typer.Typer()


@server_app.command()
def server(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).")] = 8000,
    database_url: DatabaseUrlOpt = None,
    artifacts_url: Annotated[
        str | None,
        typer.Option(
            "--artifacts-url", help="Artifact store URL (default: $FLOWFED_ARTIFACTS_URL)."
        ),
    ] = None,
    broker_url: Annotated[
        str,
        typer.Option(
            "--broker-url", help="Event bus: memory:// (default), redis://HOST or nats://HOST."
        ),
    ] = "memory://",
    imports: ImportOpt = None,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="Largest request body accepted.")
    ] = 10 * 1024 * 1024,
    token_ttl: Annotated[
        int, typer.Option("--token-ttl", help="Lifetime of OAuth2 access tokens (seconds).")
    ] = 900,
    signing_key_file: Annotated[
        str | None,
        typer.Option(
            "--signing-key-file",
            help="File holding the access-token signing key, at least 32 bytes (default: "
            "$FLOWFED_SIGNING_KEY, else a key generated once and kept in "
            "<catalog>.signing-key, mode 0600, next to a SQLite catalog, or in the database "
            "on PostgreSQL).",
        ),
    ] = None,
    ssl_certfile: Annotated[
        str | None,
        typer.Option("--ssl-certfile", help="TLS certificate chain (PEM): serve HTTPS and WSS."),
    ] = None,
    ssl_keyfile: Annotated[
        str | None, typer.Option("--ssl-keyfile", help="TLS private key (PEM) of --ssl-certfile.")
    ] = None,
    trigger_interval: Annotated[
        float,
        typer.Option(
            "--trigger-interval", help="Seconds between trigger passes (0: no trigger service)."
        ),
    ] = 5.0,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="Where runs call tools: threads (default), processes, subprocess, sandbox "
            "(bubblewrap), container, dask://HOST:PORT, ray://HOST:PORT, dask://local or "
            "ray://local (docs/executors.md).",
        ),
    ] = "threads",
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            help="On SIGTERM, seconds tasks in flight may take to end before their runs are "
            "handed over to another server (docs/server.md).",
        ),
    ] = 30.0,
    node_liveness: Annotated[
        float,
        typer.Option(
            "--node-liveness",
            help="Seconds a node agent may miss heartbeats before it is marked offline "
            "(default: 3 heartbeats; docs/nodes.md).",
        ),
    ] = 0.0,
    task_timeout: Annotated[
        float | None,
        typer.Option(
            "--task-timeout",
            min=0.001,
            help="Default task timeout in seconds of the server's runs, for steps without a "
            "`timeout:` of their own (a flow's `config: {task_timeout: S}` comes first). "
            "Default: none.",
        ),
    ] = None,
) -> None:
    """Serve the REST and WebSocket API (one process, uvicorn)."""
    import socket

    local_only(
        ctx,
        "server",
        "it starts a server; --server points the other commands at one. Leave it out "
        "(unset FLOWFED_SERVER if it is set)",
    )
    import uvicorn

    from flowfed.server.app import create_app
    from flowfed.server.settings import ServerSettings
    from flowfed.server.startup import StartupError, check_startup

    settings = ServerSettings(
        host=host,
        port=port,
        database_url=database_url,
        artifacts_url=artifacts_url,
        broker_url=broker_url,
        imports=list(imports or []),
        max_body_bytes=max_body_bytes,
        token_ttl=token_ttl,
        signing_key_file=signing_key_file,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        trigger_interval=trigger_interval,
        executor=executor,
        drain_timeout=drain_timeout,
        node_liveness=node_liveness,
        task_timeout=task_timeout,
    )
    if drain_timeout < 0 or node_liveness < 0:
        fail("--drain-timeout and --node-liveness take seconds, 0 or more")
    from flowfed.api import _known_executor

    if not _known_executor(executor):
        fail(f"--executor: unknown executor {executor!r} (see docs/executors.md)")
    try:
        check_startup(settings).close()
    except StartupError as exc:
        fail(str(exc))
    # Bind here rather than in uvicorn: a taken port is then one clear error, and with
    # --port 0 the address actually bound can be printed for whoever started us.
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    scheme = "https" if ssl_certfile else "http"
    print(f"flowfed server listening on {scheme}://{shown}:{bound_port}", flush=True)
    from flowfed.server.serve import DrainingServer

    application = create_app(settings)
    config = uvicorn.Config(
        application,
        log_level="info",
        lifespan="on",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    # SIGTERM drains: no new work, runs handed over to another server (docs/server.md).
    srv = DrainingServer(config, application, drain_timeout=drain_timeout)
    srv.run(sockets=[sock])
    if not srv.started:
        fail("the server did not start (see the log above)")
