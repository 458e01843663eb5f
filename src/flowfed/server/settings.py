"""The server's settings: where it listens, which database, store and bus it uses."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Largest request body accepted by default (bytes).
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


@dataclass
class ServerSettings:
    """Everything ``create_app`` needs; ``flowfed server`` fills it from its options.

    ``database_url`` and ``artifacts_url`` default (when None) to flowfed's defaults
    (``$FLOWFED_DATABASE_URL`` / ``$FLOWFED_ARTIFACTS_URL`` or ``.flowfed/``).
    ``broker_url`` is the event bus: ``memory://`` (one process), ``redis://...`` or
    ``nats://...`` (several processes; ``?prefix=`` separates deployments). ``imports``
    are tool files or modules imported at start-up: the server plans and runs
    submitted flows against the tools they register, and never imports code that a
    submitted flow names.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    artifacts_url: str | None = None
    broker_url: str = "memory://"
    imports: list[str] = field(default_factory=list)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def resolved_database_url(self) -> str:
        """The database URL, falling back to flowfed's default."""
        from flowfed.api import default_database_url

        return self.database_url or default_database_url()

    def resolved_artifacts_url(self) -> str:
        """The artifact store URL, falling back to flowfed's default."""
        from flowfed.api import default_artifacts_url

        return self.artifacts_url or default_artifacts_url()
