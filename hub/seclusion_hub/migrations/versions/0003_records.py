"""incident records, parent contacts, addenda and the pupil register

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 19:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import seclusion_hub.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = seclusion_hub.models.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "pupil",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("first_name", sa.String(length=100), nullable=False),
        sa.Column("last_name", sa.String(length=100), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=True),
        sa.Column("year_group", sa.String(length=16), nullable=True),
        sa.Column("sex", sa.String(length=32), nullable=True),
        sa.Column("ethnicity", sa.String(length=64), nullable=True),
        sa.Column("sen", sa.String(length=16), nullable=False),
        sa.Column("fsm", sa.Boolean(), nullable=True),
        sa.Column("looked_after", sa.Boolean(), nullable=True),
        sa.Column("characteristics", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("updated_at", UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "reference", name="uq_pupil_site_reference"),
    )
    with op.batch_alter_table("pupil", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pupil_site"), ["site"], unique=False)

    op.create_table(
        "incident_addendum",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.String(length=36), nullable=False),
        sa.Column("at", UTC(timezone=True), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incident.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("incident_addendum", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_incident_addendum_incident_id"), ["incident_id"], unique=False)

    op.create_table(
        "incident_staff",
        sa.Column("incident_id", sa.String(length=36), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incident.id"],
        ),
        sa.PrimaryKeyConstraint("incident_id", "idx"),
    )
    with op.batch_alter_table("incident_staff", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_incident_staff_name"), ["name"], unique=False)

    op.create_table(
        "parent_contact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.String(length=36), nullable=False),
        sa.Column("at", UTC(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incident.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("parent_contact", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_parent_contact_incident_id"), ["incident_id"], unique=False)

    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pupil_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("classification", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("record", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("ended_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("record_due_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("parent_notice_due_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("parent_copy_due_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("authority_notice_due_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("recorded_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("recorded_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("parent_notified_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("parent_copy_sent_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("parent_copy_method", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("parent_copy_withheld_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("parent_copy_withheld_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("parent_copy_withheld_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("authority_notified_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("reviewed_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("reviewed_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("closed_at", UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("closed_by", sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f("ix_incident_pupil_id"), ["pupil_id"], unique=False)
    # Records opened before this migration learn when their episode ended (their deadlines stay unset:
    # the hub sets them when an episode ends, and does not invent them afterwards).
    op.execute(
        "UPDATE incident SET ended_at = (SELECT episode.ended_at FROM episode WHERE episode.id = incident.episode_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_incident_pupil_id"))
        batch_op.drop_column("closed_by")
        batch_op.drop_column("closed_at")
        batch_op.drop_column("reviewed_by")
        batch_op.drop_column("reviewed_at")
        batch_op.drop_column("authority_notified_at")
        batch_op.drop_column("parent_copy_withheld_reason")
        batch_op.drop_column("parent_copy_withheld_by")
        batch_op.drop_column("parent_copy_withheld_at")
        batch_op.drop_column("parent_copy_method")
        batch_op.drop_column("parent_copy_sent_at")
        batch_op.drop_column("parent_notified_at")
        batch_op.drop_column("recorded_by")
        batch_op.drop_column("recorded_at")
        batch_op.drop_column("authority_notice_due_at")
        batch_op.drop_column("parent_copy_due_at")
        batch_op.drop_column("parent_notice_due_at")
        batch_op.drop_column("record_due_at")
        batch_op.drop_column("ended_at")
        batch_op.drop_column("record")
        batch_op.drop_column("classification")
        batch_op.drop_column("pupil_id")

    with op.batch_alter_table("parent_contact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_parent_contact_incident_id"))

    op.drop_table("parent_contact")
    with op.batch_alter_table("incident_staff", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_incident_staff_name"))

    op.drop_table("incident_staff")
    with op.batch_alter_table("incident_addendum", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_incident_addendum_incident_id"))

    op.drop_table("incident_addendum")
    with op.batch_alter_table("pupil", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pupil_site"))

    op.drop_table("pupil")
