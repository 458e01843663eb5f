"""Start-up checks of ``flowfed server``: settings, broker, database, tools, and the
database's server lock.

``flowfed server`` runs :func:`check_startup` before binding, so a bad configuration ends
the command with one paragraph and exit code 2; the application's lifespan runs it again
and then holds the database with :func:`hold_database` for as long as it serves.

**The server lock.** Server processes on one database see each other's run events only
through a shared broker. A server with the in-process ``memory://`` broker therefore must
be the only server on its database: a second one would never see the first's events
(``runs watch`` through it would wait for an end it never hears of). Each server holds a
lock on the database, shared for a real broker and exclusive for ``memory://``, so either
combination that cannot work is refused at start-up, naming ``--broker-url``. On
PostgreSQL the lock is a session advisory lock (released by the database when the
process dies, even by ``kill -9``); on SQLite an ``flock`` on ``<catalog>.server-lock``.

Example:
    >>> # db = check_startup(settings); lock = hold_database(db, settings.broker_url)
    >>> # ... serve ...; lock.release(); db.close()
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flowfed.db import Database
from flowfed.server.settings import ServerSettings

log = logging.getLogger("flowfed.server")

#: The advisory-lock key every flowfed server on a PostgreSQL database takes (``ffsrv``).
PG_LOCK_KEY = 0x6666_7372_76


class StartupError(RuntimeError):
    """The server cannot start with these settings; the message says why and what to do."""


def check_startup(settings: ServerSettings) -> Database:
    """Validate the settings, open the database and import the tools (StartupError if not).

    The returned database has the expected schema; the caller owns it.
    """
    from flowfed.db import SchemaOutOfDate
    from flowfed.server.oauth import SigningKeyError, load_signing_key
    from flowfed.tools.loading import import_tools

    # The broker first: connecting to it is cheap, and it fails fast on a typo.
    close_bus(open_bus(settings.broker_url))
    if settings.max_body_bytes < 1:
        raise StartupError(f"max_body_bytes must be positive, got {settings.max_body_bytes}")
    if settings.token_ttl < 1:
        raise StartupError(f"--token-ttl must be at least 1 second, got {settings.token_ttl}")
    check_tls(settings)
    url = settings.resolved_database_url()
    try:
        db = Database(url, pool_size=settings.db_pool_size)
    except Exception as exc:  # a malformed URL or a missing driver
        raise StartupError(f"cannot use database URL {url!r}: {exc}") from None
    try:
        db.ensure_schema(auto_upgrade=False)
    except SchemaOutOfDate as exc:
        db.close()
        raise StartupError(
            f"{exc} (on {db!r}); the server never migrates a database by itself, so that "
            "several servers and a running migration cannot collide"
        ) from None
    except Exception as exc:
        db.close()
        from flowfed.db.problems import describe_db_error

        reason = describe_db_error(db.engine.url, exc)
        raise StartupError(f"cannot open database {db!r}: {reason}") from None
    if settings.claim_database:
        try:
            hold_database(db, settings.broker_url).release()
        except StartupError:
            db.close()
            raise
    try:
        load_signing_key(db, settings.signing_key_file)
    except SigningKeyError as exc:
        db.close()
        raise StartupError(str(exc)) from None
    problems = import_tools(list(settings.imports), Path.cwd())
    if problems:
        db.close()
        raise StartupError("cannot import tools: " + "; ".join(str(p) for p in problems))
    return db


def check_tls(settings: ServerSettings) -> None:
    """StartupError unless the TLS certificate and key are both given, readable and a pair."""
    import ssl

    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise StartupError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    for option, path in (("--ssl-certfile", cert), ("--ssl-keyfile", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise StartupError(f"cannot read {option} {path!r}: {exc.strerror or exc}") from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise StartupError(
            f"cannot use the TLS certificate {cert!r} with key {key!r}: {exc}"
        ) from None


def open_bus(url: str) -> Any:
    """The event bus ``url`` names, reachable (StartupError otherwise)."""
    from flowfed.events.remote import BrokerUnreachable, BusURLError, make_bus

    try:
        bus = make_bus(url)
        check = getattr(bus, "check", None)
        if check is not None:
            # Says why (the URL and the reason), where bus_ok below only says whether.
            try:
                check()
            except BrokerUnreachable:
                close_bus(bus)
                raise
    except (BusURLError, BrokerUnreachable) as exc:
        raise StartupError(str(exc)) from None
    except Exception as exc:  # a missing client library, a malformed host
        raise StartupError(f"cannot use broker {url!r}: {type(exc).__name__}: {exc}") from None
    if not bus_ok(bus):
        close_bus(bus)
        raise StartupError(f"cannot reach the broker at {url!r}")
    return bus


def bus_ok(bus: Any) -> bool:
    """Whether the bus answers (an in-memory bus always does)."""
    ping = getattr(bus, "ping", None)
    if ping is None:
        return True
    try:
        return bool(ping())
    except Exception:
        return False


def close_bus(bus: Any) -> None:
    """Release a bus's broker connections, if it has any."""
    close = getattr(bus, "close", None)
    if close is not None:
        close()


class DatabaseLock:
    """This process's hold on its database as a server (see the module docstring)."""

    def __init__(self, release: Any) -> None:
        self._release = release

    def release(self) -> None:
        """Let go of the database (server shutdown); safe to call twice."""
        release, self._release = self._release, None
        if release is not None:
            try:
                release()
            except Exception:  # the process is ending; the lock goes with it
                log.debug("releasing the server lock failed", exc_info=True)


def _alone_message(broker_url: str, exclusive: bool) -> str:
    if exclusive:
        return (
            "another flowfed server is running on this database, and this one uses the "
            f"in-process broker {broker_url!r}: the two would never see each other's run "
            "events (a `runs watch` through one would wait forever for a run the other "
            "executes). Give every server on the database the same --broker-url "
            "redis://HOST:6379/0 or nats://HOST:4222 (docs/server.md, Several server "
            "processes), or stop the other server"
        )
    return (
        "another flowfed server is running on this database with the in-process broker "
        "memory://, which no other server can reach: restart it with --broker-url "
        f"{broker_url} (the same broker as this one), or stop it first"
    )


def hold_database(db: Database, broker_url: str) -> DatabaseLock:
    """Take the database's server lock, or StartupError naming ``--broker-url``.

    Exclusive with the ``memory://`` broker (no other server may share the database),
    shared otherwise (any number of servers with a real broker).
    """
    exclusive = broker_url.split(":", 1)[0] == "memory"
    if db.url.startswith("postgresql"):
        return _hold_postgres(db, broker_url, exclusive)
    if db.url.startswith("sqlite"):
        return _hold_sqlite(db, broker_url, exclusive)
    return DatabaseLock(None)


def _hold_postgres(db: Database, broker_url: str, exclusive: bool) -> DatabaseLock:
    from sqlalchemy import text

    # A connection of its own, kept open: the lock lives exactly as long as the session.
    conn = db.engine.connect()
    fn = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
    try:
        got = bool(conn.execute(text(f"SELECT {fn}(:k)"), {"k": PG_LOCK_KEY}).scalar())
        conn.commit()
    except Exception:
        conn.close()
        raise
    if not got:
        conn.close()
        raise StartupError(_alone_message(broker_url, exclusive))
    return DatabaseLock(conn.close)


def _hold_sqlite(db: Database, broker_url: str, exclusive: bool) -> DatabaseLock:
    import fcntl

    catalog = db.url.split("///", 1)[1] if "///" in db.url else ""
    if not catalog or catalog.startswith(":memory:"):
        return DatabaseLock(None)
    path = Path(catalog.split("?", 1)[0] + ".server-lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # a read-only folder: the catalog itself will say more
        log.warning("cannot create the server lock %s: %s", path, exc)
        return DatabaseLock(None)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StartupError(_alone_message(broker_url, exclusive)) from None
    return DatabaseLock(lambda: os.close(fd))
