"""alerts, their deliveries and every delivery attempt

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import seclusion_hub.models

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = seclusion_hub.models.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "alert",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("room", sa.String(length=63), nullable=False),
        sa.Column("episode_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("raised_at", UTC(timezone=True), nullable=False),
        sa.Column("resolved_at", UTC(timezone=True), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("updated_at", UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_episode_id"), ["episode_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_alert_active"), ["active"], unique=False)
        batch_op.create_index(batch_op.f("ix_alert_raised_at"), ["raised_at"], unique=False)
        batch_op.create_index("ix_alert_room_raised", ["site", "room", "raised_at"], unique=False)
    op.create_table(
        "delivery",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=300), nullable=False),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("last_attempt_at", UTC(timezone=True), nullable=True),
        sa.Column("next_retry_at", UTC(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_delivery_status"), ["status"], unique=False)
    op.create_table(
        "delivery_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.String(length=80), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", UTC(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("delivery_attempt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_attempt_delivery_id"), ["delivery_id"], unique=False)


def downgrade() -> None:
    op.drop_table("delivery_attempt")
    op.drop_table("delivery")
    op.drop_table("alert")
