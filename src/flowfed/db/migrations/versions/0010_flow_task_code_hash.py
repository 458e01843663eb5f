"""Each task records its tool's effective code hash beside the declared tool version.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add tasks.code_hash."""
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("code_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop tasks.code_hash."""
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("code_hash")
