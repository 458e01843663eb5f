"""Why a database could not be opened, said so a user can act on it.

The CLI (``flowfed db upgrade``, ``flowfed runs ...``, ``flowfed auth ...``) and the server's
start-up checks share these words, so one cause reads the same everywhere.

Example:
    >>> from sqlalchemy.engine import make_url
    >>> class E(Exception): pass
    >>> print(describe_db_error(make_url("postgresql://bob@db:5432/ff"),
    ...       E('connection failed: FATAL:  database "ff" does not exist')))
    ... # doctest: +NORMALIZE_WHITESPACE
    the PostgreSQL database "ff" does not exist on db: create it with `createdb -h db -p 5432
    -U bob ff` (or `CREATE DATABASE "ff";` in psql), then run `flowfed db upgrade`
"""

from __future__ import annotations

from typing import Any


def describe_db_error(url: Any, exc: BaseException) -> str:
    """The reason ``exc`` gives for not opening the database at ``url`` (a SQLAlchemy URL).

    A PostgreSQL database that does not exist says so and how to create it; anything else
    is the exception's type and the first line of the driver's message (without
    SQLAlchemy's "Background on this error" footer).
    """
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    first = lines[0] if lines else ""
    backend = url.get_backend_name() if hasattr(url, "get_backend_name") else ""
    name = getattr(url, "database", None)
    if backend == "postgresql" and name and f'database "{name}" does not exist' in str(orig):
        host = getattr(url, "host", None) or "localhost"
        creator = f"createdb -h {host}"
        if getattr(url, "port", None):
            creator += f" -p {url.port}"
        if getattr(url, "username", None):
            creator += f" -U {url.username}"
        return (
            f'the PostgreSQL database "{name}" does not exist on {host}: create it with '
            f'`{creator} {name}` (or `CREATE DATABASE "{name}";` in psql), then run '
            "`flowfed db upgrade`"
        )
    kind = type(orig).__name__
    return f"{kind}: {first}" if first else kind
