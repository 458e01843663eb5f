"""The server's settings: where it listens, which database, store and bus it uses."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Largest request body accepted by default (bytes).
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
#: Threads the server's routes hand blocking work to (database reads, planning, starting
#: runs). asyncio's default (CPU count + 4) queued a burst of submissions behind a handful
#: of threads waiting on the database.
REQUEST_THREADS = 64
#: Default lifetime of OAuth2 access tokens (seconds).
DEFAULT_TOKEN_TTL_S = 900


@dataclass
class ServerSettings:
    """Everything ``create_app`` needs; ``flowfed server`` fills it from its options.

    ``database_url`` and ``artifacts_url`` default (when None) to flowfed's defaults
    (``$FLOWFED_DATABASE_URL`` / ``$FLOWFED_ARTIFACTS_URL`` or ``.flowfed/``).
    ``broker_url`` is the event bus: ``memory://`` (one process), ``redis://...`` or
    ``nats://...`` (several processes; ``?prefix=`` separates deployments). ``imports``
    are tool files or modules imported at start-up: the server plans and runs
    submitted flows against the tools they register, and never imports code that a
    submitted flow names. ``token_ttl`` and ``signing_key_file`` govern OAuth2 access
    tokens; ``ssl_certfile`` and ``ssl_keyfile`` make ``flowfed server`` serve HTTPS.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    artifacts_url: str | None = None
    broker_url: str = "memory://"
    imports: list[str] = field(default_factory=list)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Lifetime of OAuth2 access tokens, in seconds.
    token_ttl: int = DEFAULT_TOKEN_TTL_S
    #: File holding the access-token signing key; None: ``$FLOWFED_SIGNING_KEY``, else a
    #: key generated once, kept next to a SQLite catalog (``<catalog>.signing-key``, 0600)
    #: or in a PostgreSQL database (shared by every server on it).
    signing_key_file: str | None = None
    #: TLS certificate chain and private key (PEM); both or neither.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: Seconds between passes of the trigger service (docs/triggers.md); 0 turns it off.
    trigger_interval: float = 5.0
    #: Where the server's runs call their tools: ``threads`` or a cluster URL such as
    #: ``dask://scheduler:8786`` or ``ray://head:10001`` (docs/executors.md). A submitted
    #: flow's own ``executor:`` is ignored: the operator decides where code runs.
    executor: str = "threads"
    #: Take the database's server lock (``flowfed.server.startup.hold_database``): a
    #: ``memory://`` server refuses to share its database with another server. Off for
    #: the embedded server of ``flowfed run``, which serves only its own run's nodes.
    claim_database: bool = True
    #: Connections the server keeps to a PostgreSQL database (as many again under load):
    #: request threads and running runs share them (:data:`REQUEST_THREADS`).
    db_pool_size: int = 32
    #: Seconds a SIGTERM gives tasks in flight to end before their runs are handed over
    #: to another server (``--drain-timeout``, docs/server.md).
    drain_timeout: float = 30.0
    #: Seconds a node may be silent (no heartbeat, no frame) before it is marked offline
    #: (``--node-liveness``, docs/nodes.md); 0: three of its heartbeat intervals.
    node_liveness: float = 0.0
    #: Default task timeout (seconds) of the server's runs, for steps without a ``timeout:``.
    task_timeout: float | None = None

    def resolved_database_url(self) -> str:
        """The database URL, falling back to flowfed's default."""
        from flowfed.api import default_database_url

        return self.database_url or default_database_url()

    def resolved_artifacts_url(self) -> str:
        """The artifact store URL, falling back to flowfed's default."""
        from flowfed.api import default_artifacts_url

        return self.artifacts_url or default_artifacts_url()
