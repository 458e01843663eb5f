"""Shared fixtures."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get(
    "FLOWFED_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _worker_id(request: pytest.FixtureRequest) -> str:
    # pytest-xdist sets PYTEST_XDIST_WORKER (gw0, gw1, ...); "main" without xdist.
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def pg_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (per xdist worker); its URL.

    Never skipped: if PostgreSQL is down, the tests using it fail.
    """
    import psycopg

    name = f"flowfed_test_{_worker_id(request)}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset_pg(url: str) -> None:
    """Empty the session database: end stray connections, recreate the public schema."""
    import psycopg

    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        # A connection leaked by an earlier test would block DROP SCHEMA on its locks.
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database, for SQLite and PostgreSQL in turn.

    SQLite: a file in tmp_path. PostgreSQL: the session database, emptied before the test,
    so tests never see each other's rows (xdist workers each have their own database).
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'flowfed.db'}"
    url: str = request.getfixturevalue("pg_database")
    _reset_pg(url)
    return url
