"""Artifact version numbers: each new artifact gets ``1 + max(version)`` of its name.

Its own room because it is the one place where two writers (several runs, several server
processes on one PostgreSQL) can race; :class:`flowfed.db.writer.Writer` calls it inside
each drain's transaction and retries a drain that lost the race.

Example:
    >>> rows = [{"name": "model", "meta": None, "shareable": None, "pickled": None}]
    >>> with engine.begin() as conn:  # doctest: +SKIP
    ...     assign_versions(conn, rows)
    >>> rows[0]["version"]  # doctest: +SKIP
    1
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select, text

from flowfed.db import models as m

#: Advisory-lock namespace (first key) for per-name artifact version assignment.
_VERSION_LOCK_NS = 0x0F1F


def assign_versions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Give each new artifact ``1 + max(version)`` of its name, in row order.

    Runs inside the drain's transaction: SQLite holds the write lock (BEGIN IMMEDIATE), and on
    PostgreSQL a concurrent writer that picked the same number trips the unique constraint,
    which rolls this drain back and retries it (see ``Writer._apply``).
    """
    a = m.artifacts
    names = sorted({r["name"] for r in rows})
    if conn.dialect.name == "postgresql":
        # Serialize version assignment per name across concurrent writers (several runs,
        # several server processes): without it two transactions read the same max and
        # one fails on the unique constraint. Names are locked in sorted order, so two
        # writers locking several names cannot deadlock; the locks end with the transaction.
        for name in names:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:ns, hashtext(:name))"),
                {"ns": _VERSION_LOCK_NS, "name": name},
            )
    latest: dict[str, int] = {
        name: int(v)
        for name, v in conn.execute(
            select(a.c.name, func.max(a.c.version)).where(a.c.name.in_(names)).group_by(a.c.name)
        )
    }
    for r in rows:
        v = latest.get(r["name"], 0) + 1
        latest[r["name"]] = v
        r["version"] = v
        if r["meta"] is None:
            r["meta"] = {}
        if r["shareable"] is None:
            r["shareable"] = True
        if r["pickled"] is None:
            r["pickled"] = False
