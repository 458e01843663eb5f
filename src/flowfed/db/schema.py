"""Schema versioning: the expected Alembic head, the programmatic Alembic config, and the
precompiled SQLite DDL of the newest schema.

Alembic is imported only inside :func:`alembic_config` (and by its callers), because the
common start-up path just compares one row of ``alembic_version`` with :data:`HEAD_REVISION`.

``schema_sqlite.sql`` is what ``models.metadata.create_all`` emits on SQLite, checked in:
an empty SQLite catalog (every first ``flowfed run`` in a new home) executes it instead of
paying ~7 ms for SQLAlchemy to compile the same 31 statements each time. After changing
``models.py``, regenerate it with ``python -m flowfed.db --write-sqlite-ddl``
(:mod:`flowfed.db.sqlite_ddl`; ``tests/test_db.py`` fails while the file and the metadata
disagree).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest migration in ``migrations/versions``; bump it with every new migration
#: (``tests/test_db.py`` asserts it equals Alembic's script head).
HEAD_REVISION = "0007"

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: The newest schema as SQLite DDL (package data; see the module docstring).
SQLITE_DDL_PATH = Path(__file__).resolve().parent / "schema_sqlite.sql"


class SchemaOutOfDate(RuntimeError):
    """The database schema is not the one this flowfed version expects."""

    def __init__(
        self, found: str | None, expected: str = HEAD_REVISION, *, unknown: bool = False
    ) -> None:
        self.found = found
        self.expected = expected
        where = "an empty database (no schema)" if found is None else f"revision {found!r}"
        if unknown:
            # Upgrading cannot help: a newer flowfed probably migrated this database.
            hint = "this flowfed does not know that revision; upgrade flowfed itself"
        else:
            hint = "run `flowfed db upgrade`"
        super().__init__(
            f"database schema is out of date: found {where}, expected revision {expected!r}; {hint}"
        )


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # configparser interpolation would choke on '%' in passwords or query strings.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.cache
def sqlite_ddl_statements() -> tuple[str, ...]:
    """The statements of ``schema_sqlite.sql``, one per item, without comments.

    Executed one by one (not ``executescript``, which commits the open transaction) inside
    the upgrade's ``BEGIN IMMEDIATE``, so a concurrent first start sees all or nothing.
    """
    body = "\n".join(
        line
        for line in SQLITE_DDL_PATH.read_text(encoding="utf-8").splitlines()
        if not line.startswith("--")
    )
    return tuple(sql.strip() for sql in body.split(";") if sql.strip())
