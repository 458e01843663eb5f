"""flowfed's catalog database: SQLAlchemy models, Alembic migrations, a batching writer.

SQLite (WAL) by default, PostgreSQL (psycopg 3) in production. Alembic is imported only when
a migration actually runs, so opening an up-to-date database stays cheap.
"""

from flowfed.db.database import (
    MIN_PREFIX,
    AmbiguousRef,
    Database,
    default_database_url,
    normalize_url,
)
from flowfed.db.schema import HEAD_REVISION, SchemaOutOfDate, alembic_config
from flowfed.db.writer import Writer

__all__ = [
    "HEAD_REVISION",
    "MIN_PREFIX",
    "AmbiguousRef",
    "Database",
    "SchemaOutOfDate",
    "Writer",
    "alembic_config",
    "default_database_url",
    "normalize_url",
]
