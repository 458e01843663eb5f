"""Alembic environment for flowfed.

There is no alembic.ini: :func:`flowfed.db.schema.alembic_config` builds the config in code
and hands over an open connection in ``config.attributes["connection"]`` so the upgrade runs
inside the caller's transaction (and, on PostgreSQL, under its advisory lock).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from flowfed.db.models import metadata

config = context.config
target_metadata = metadata


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade --sql``) without a database."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against the connection given by flowfed, or a fresh engine from the config URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        # render_as_batch: SQLite cannot ALTER most things; batch mode recreates tables.
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
