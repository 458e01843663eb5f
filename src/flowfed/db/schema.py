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

``schema_sqlite.db.gz`` goes one step further: an empty catalog made from that DDL and
stamped with :data:`HEAD_REVISION`, gzipped (3 KB). A new catalog file starts as a copy of
it (:func:`create_from_template`): writing one file costs about 2 ms where executing the
DDL costs SQLite itself 4-7 ms (31 statements, the switch to WAL, the commit). The same
command regenerates it; ``tests/test_db.py`` checks that it holds what the DDL makes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest migration in ``migrations/versions``; bump it with every new migration
#: (``tests/test_db.py`` asserts it equals Alembic's script head).
HEAD_REVISION = "0011"

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: The newest schema as SQLite DDL (package data; see the module docstring).
SQLITE_DDL_PATH = Path(__file__).resolve().parent / "schema_sqlite.sql"

#: An empty catalog of the newest schema, gzipped (package data; see the module docstring).
SQLITE_TEMPLATE_PATH = Path(__file__).resolve().parent / "schema_sqlite.db.gz"


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


def create_from_template(path: Path) -> bool:
    """Create the SQLite catalog ``path`` as a copy of the packaged empty catalog.

    Returns False, having written nothing, when ``path`` already exists or the copy cannot
    be made (no template, a file system without hard links): the caller then creates the
    schema from the DDL, as before. The bytes go to a private temporary file first and
    appear at ``path`` by a hard link, which fails if ``path`` exists: another process
    opening or creating the same catalog meanwhile never sees a half-written file, and a
    catalog that appeared in between is never replaced.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "flowfed.db"
        >>> create_from_template(target), create_from_template(target)
        (True, False)
    """
    # Imported here: only a new catalog needs them, not every start-up.
    import gzip
    import zlib

    if path.exists():
        return False
    try:
        data = gzip.decompress(SQLITE_TEMPLATE_PATH.read_bytes())
    except (OSError, EOFError, zlib.error):
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        # 0600 from the first byte: the catalog will hold every run's data, and a reader
        # who opened it while it was still 0644 would keep that descriptor after a chmod.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
        os.link(tmp, path)
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return True
