"""Placed and federated tasks: the plan key, the node dataset and the subvariant.

A step placed on every dataset, or a federated step's rounds, runs as many tasks: the
plan key (``preprocess[hospital-a:breast]``, ``train/round 3/hospital-a``) tells them
apart; ``dataset`` names the node dataset a task read; ``variant`` the subvariant of a
step whose params list several values.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add tasks.plan_key, tasks.dataset and tasks.variant."""
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("plan_key", sa.String(512), nullable=True))
        batch.add_column(sa.Column("dataset", sa.String(255), nullable=True))
        batch.add_column(sa.Column("variant", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop the three columns."""
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("variant")
        batch.drop_column("dataset")
        batch.drop_column("plan_key")
