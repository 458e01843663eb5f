"""Generate ``schema_sqlite.sql`` (see :mod:`flowfed.db.schema`) from ``models.metadata``.

``python -m flowfed.db --write-sqlite-ddl`` rewrites it, ``--check-sqlite-ddl`` only
compares. Kept apart from :mod:`flowfed.db.schema` so start-up never loads (or, without
bytecode caches, compiles) this maintenance code.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sqlalchemy import create_mock_engine
from sqlalchemy.schema import CreateIndex

from flowfed.db import models
from flowfed.db.schema import SQLITE_DDL_PATH

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


def main(argv: list[str] | None = None) -> int:
    """``python -m flowfed.db --write-sqlite-ddl`` (or ``--check-sqlite-ddl``)."""
    parser = argparse.ArgumentParser(
        prog="python -m flowfed.db", description="Maintain flowfed/db/schema_sqlite.sql."
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--write-sqlite-ddl", action="store_true", help="regenerate it from models.metadata"
    )
    group.add_argument(
        "--check-sqlite-ddl",
        action="store_true",
        help="exit 1 if it differs from what models.metadata compiles to",
    )
    args = parser.parse_args(argv)
    if args.write_sqlite_ddl:
        changed = write_sqlite_ddl()
        print(f"{SQLITE_DDL_PATH}: {'rewritten' if changed else 'already up to date'}")
        return 0
    if SQLITE_DDL_PATH.read_text(encoding="utf-8") != compile_sqlite_ddl():
        print(f"{SQLITE_DDL_PATH} is out of date; run `{WRITE_SQLITE_DDL_COMMAND}`")
        return 1
    print(f"{SQLITE_DDL_PATH} is up to date")
    return 0
