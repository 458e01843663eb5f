"""``find_marker`` finds what it must (files, SQLite with its WAL, PostgreSQL columns)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg

from flowfed.db import Database
from tests.security.central import find_marker

MARKER = b"MRK-7f3a9-never-leaves"


def test_files_are_searched_recursively_as_raw_bytes(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "blob.bin").write_bytes(b"\x00\xff" + MARKER + b"\x00")
    (tmp_path / "clean.txt").write_text("nothing here")
    assert find_marker(MARKER, paths=[tmp_path]) == [str(deep / "blob.bin")]
    assert find_marker(MARKER, paths=[tmp_path / "clean.txt", tmp_path / "missing"]) == []


def test_a_sqlite_catalog_and_its_wal_are_searched(tmp_path: Path) -> None:
    catalog = tmp_path / "flowfed.db"
    db = Database(f"sqlite:///{catalog}")
    db.ensure_schema()
    assert find_marker(MARKER, paths=[tmp_path]) == []
    conn = sqlite3.connect(catalog)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # keep the row in the WAL only
    conn.execute("CREATE TABLE leak (v TEXT)")
    conn.execute("INSERT INTO leak VALUES (?)", (MARKER.decode(),))
    conn.commit()
    try:
        assert str(catalog) + "-wal" in find_marker(MARKER, paths=[tmp_path])
    finally:
        conn.close()
        db.close()


def test_postgresql_text_bytea_and_json_columns_are_searched(pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        conn.execute("CREATE TABLE t_text (id int, v text, n int)")
        conn.execute("CREATE TABLE t_bytes (v bytea)")
        conn.execute("CREATE TABLE t_json (v jsonb)")
        assert find_marker(MARKER, paths=[], db_url=pg_database) == []
        conn.execute("INSERT INTO t_text VALUES (1, %s, 2)", (f"x{MARKER.decode()}y",))
        conn.execute("INSERT INTO t_bytes VALUES (%s)", (b"\x00" + MARKER,))
        conn.execute("INSERT INTO t_json VALUES (%s)", (json.dumps({"k": [MARKER.decode()]}),))
    url = "postgresql+psycopg://" + pg_database.split("://", 1)[1]
    assert find_marker(MARKER, paths=[], db_url=url) == [
        "postgresql:t_bytes.v (1 rows)",
        "postgresql:t_json.v (1 rows)",
        "postgresql:t_text.v (1 rows)",
    ]
