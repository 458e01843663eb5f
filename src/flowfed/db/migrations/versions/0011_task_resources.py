"""Resource use per task attempt; a run's retry origin and starting trigger.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add tasks.resources, tasks.attempt_resources, runs.retry_of and runs.trigger."""
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("resources", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("attempt_resources", sa.JSON(), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("retry_of", sa.String(32), nullable=True))
        batch.add_column(sa.Column("trigger", sa.String(255), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("trigger")
        batch.drop_column("retry_of")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("attempt_resources")
        batch.drop_column("resources")
