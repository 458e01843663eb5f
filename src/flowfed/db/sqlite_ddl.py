"""Generate ``schema_sqlite.sql`` and ``schema_sqlite.db.gz`` (see :mod:`flowfed.db.schema`).

``python -m flowfed.db --write-sqlite-ddl`` rewrites them from ``models.metadata``,
``--check-sqlite-ddl`` only compares. Kept apart from :mod:`flowfed.db.schema` so start-up
never loads (or, without bytecode caches, compiles) this maintenance code.
"""

from __future__ import annotations

import argparse
import gzip
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import create_mock_engine
from sqlalchemy.schema import CreateIndex

from flowfed.db import models
from flowfed.db.schema import (
    HEAD_REVISION,
    SQLITE_DDL_PATH,
    SQLITE_TEMPLATE_PATH,
    sqlite_ddl_statements,
)

WRITE_SQLITE_DDL_COMMAND = "python -m flowfed.db --write-sqlite-ddl"

_HEADER = f"""\
-- The flowfed catalog schema for SQLite: what flowfed.db.models.metadata.create_all
-- emits, run by Database.upgrade on an empty SQLite database. Generated; do not edit.
-- Regenerate after changing models.py: {WRITE_SQLITE_DDL_COMMAND}
"""


def compile_sqlite_ddl() -> str:
    """The text of ``schema_sqlite.sql`` as ``models.metadata`` compiles it today.

    The statements are the ones ``metadata.create_all`` runs on an empty SQLite database,
    captured with a mock engine, in its order (tables by foreign-key dependency, each
    followed by its indexes), except that a table's indexes are sorted by name:
    ``create_all`` walks them as a set, in an order that changes from process to process.
    Only trailing blanks are stripped from lines.
    """
    # each CREATE TABLE with the CREATE INDEX statements that follow it: [(sql, {name: sql})]
    tables: list[tuple[str, dict[str, str]]] = []

    def capture(ddl: Any, *_args: Any, **_kw: Any) -> None:
        sql = str(ddl.compile(dialect=engine.dialect)).strip()
        # sqlite_ddl_statements splits the script at ';' (a default or a name with one in
        # it would need a real SQL tokenizer there).
        if ";" in sql:
            raise ValueError(f"a DDL statement contains ';', cannot be split: {sql!r}")
        sql = "\n".join(line.rstrip() for line in sql.splitlines())
        if isinstance(ddl, CreateIndex):
            tables[-1][1][str(ddl.element.name)] = sql
        else:
            tables.append((sql, {}))

    engine = create_mock_engine("sqlite://", capture)
    models.metadata.create_all(engine, checkfirst=False)
    statements = [
        sql for table, indexes in tables for sql in [table, *(indexes[k] for k in sorted(indexes))]
    ]
    return _HEADER + "".join(f"\n{sql};\n" for sql in statements)


def write_sqlite_ddl(path: Path = SQLITE_DDL_PATH) -> bool:
    """(Re)write ``schema_sqlite.sql`` from the metadata; True if its content changed."""
    text = compile_sqlite_ddl()
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def build_sqlite_template() -> bytes:
    """A new catalog made by ``schema_sqlite.sql`` (never by the template), gzipped.

    gzip's timestamp is zeroed, so the same SQLite library makes the same bytes.
    """
    from flowfed.db.database import Database

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalog.db"
        database = Database(f"sqlite:///{path}")
        try:
            database.upgrade()  # the DDL path: ensure_schema would copy the template
        finally:
            database.close()  # checkpoints the WAL: the whole catalog is in one file
        return gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)


def catalog_contents(data: bytes) -> dict[str, object]:
    """What a catalog file holds, for comparing templates across SQLite versions.

    The schema objects, the Alembic stamp and the journal mode: the bytes themselves carry
    the writing library's version, so two equal catalogs can differ byte for byte.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalog.db"
        path.write_bytes(data)
        conn = sqlite3.connect(path)
        try:
            objects = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
            stamp = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            conn.close()
    return {"objects": objects, "alembic_version": stamp, "journal_mode": journal}


def template_problem(path: Path = SQLITE_TEMPLATE_PATH, fresh: bytes | None = None) -> str | None:
    """Why the template at ``path`` is not what the DDL makes today, or None.

    ``fresh`` is :func:`build_sqlite_template`'s result when the caller already has it.
    """
    try:
        held = catalog_contents(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, gzip.BadGzipFile, sqlite3.DatabaseError) as exc:
        return f"{path} cannot be read: {exc}"
    want = catalog_contents(gzip.decompress(fresh or build_sqlite_template()))
    if held["alembic_version"] != [HEAD_REVISION]:
        return f"{path} is stamped {held['alembic_version']}, not [{HEAD_REVISION!r}]"
    if held != want:
        return f"{path} holds another schema than schema_sqlite.sql makes"
    return None


def write_sqlite_template(path: Path = SQLITE_TEMPLATE_PATH) -> bool:
    """(Re)write the template unless it already holds today's schema; True if written."""
    fresh = build_sqlite_template()  # built once: compared, then written if it differs
    if path.exists() and template_problem(path, fresh) is None:
        return False
    path.write_bytes(fresh)
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m flowfed.db --write-sqlite-ddl`` (or ``--check-sqlite-ddl``)."""
    parser = argparse.ArgumentParser(
        prog="python -m flowfed.db",
        description="Maintain flowfed/db/schema_sqlite.sql and schema_sqlite.db.gz.",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--write-sqlite-ddl", action="store_true", help="regenerate them from models.metadata"
    )
    group.add_argument(
        "--check-sqlite-ddl",
        action="store_true",
        help="exit 1 if either differs from what models.metadata compiles to",
    )
    args = parser.parse_args(argv)
    if args.write_sqlite_ddl:
        # The DDL first: the template is made by executing it (as read now, not as cached).
        ddl_changed = write_sqlite_ddl()
        sqlite_ddl_statements.cache_clear()
        for path, changed in (
            (SQLITE_DDL_PATH, ddl_changed),
            (SQLITE_TEMPLATE_PATH, write_sqlite_template()),
        ):
            print(f"{path}: {'rewritten' if changed else 'already up to date'}")
        return 0
    status = 0
    if SQLITE_DDL_PATH.read_text(encoding="utf-8") != compile_sqlite_ddl():
        print(f"{SQLITE_DDL_PATH} is out of date; run `{WRITE_SQLITE_DDL_COMMAND}`")
        status = 1
    elif (problem := template_problem()) is not None:
        print(f"{problem}; run `{WRITE_SQLITE_DDL_COMMAND}`")
        status = 1
    else:
        print(f"{SQLITE_DDL_PATH} and {SQLITE_TEMPLATE_PATH.name} are up to date")
    return status
