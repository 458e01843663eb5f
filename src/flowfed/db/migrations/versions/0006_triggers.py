"""Triggers, their fires, and the platform events they can react to.

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(32)


def upgrade() -> None:
    """Create the triggers, trigger_fires and platform_events tables."""
    op.create_table(
        "triggers",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("flow_name", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("watermark", sa.Float(), nullable=False),
        sa.Column("event_since", sa.Float(), nullable=False),
        sa.Column("last_fired_at", sa.Float(), nullable=True),
        sa.Column("last_run_id", ID, nullable=True),
        sa.UniqueConstraint("name", name="uq_triggers_name"),
    )
    op.create_table(
        "trigger_fires",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "trigger_id",
            ID,
            sa.ForeignKey("triggers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("fire_key", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("catchup", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("scheduled_for", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("trigger_id", "fire_key", name="uq_trigger_fires_key"),
    )
    op.create_index("ix_trigger_fires_trigger_id", "trigger_fires", ["trigger_id"])
    op.create_table(
        "platform_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
    )
    op.create_index("ix_platform_events_ts", "platform_events", ["ts"])


def downgrade() -> None:
    """Drop the trigger tables."""
    op.drop_index("ix_platform_events_ts", table_name="platform_events")
    op.drop_table("platform_events")
    op.drop_index("ix_trigger_fires_trigger_id", table_name="trigger_fires")
    op.drop_table("trigger_fires")
    op.drop_table("triggers")
