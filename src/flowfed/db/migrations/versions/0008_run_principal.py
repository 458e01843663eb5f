"""Who submitted a run: the node's policy checks it before a placed task runs.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add runs.principal."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("principal", sa.String(255), nullable=True))


def downgrade() -> None:
    """Drop runs.principal."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("principal")
