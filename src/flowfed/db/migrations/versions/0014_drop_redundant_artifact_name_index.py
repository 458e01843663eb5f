"""Drop ``ix_artifacts_name``: the unique ``(name, version)`` index serves every lookup by name.

A second b-tree on ``artifacts.name`` cost every recorded artifact an index insert (a
third of the artifact INSERT's time for a 200-task run) and served no query the unique
index does not: its leading column is ``name``.

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Drop ix_artifacts_name."""
    op.drop_index("ix_artifacts_name", table_name="artifacts")


def downgrade() -> None:
    """Create ix_artifacts_name again."""
    op.create_index("ix_artifacts_name", "artifacts", ["name"])
