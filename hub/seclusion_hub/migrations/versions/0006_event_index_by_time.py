"""the events' timeline index leads with the time, so that new events add to its last pages

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 23:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The new index is built before the old one goes: an episode's timeline always has one to use.
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index("ix_event_site_ts_room", ["site", "ts", "room"], unique=False)
        batch_op.drop_index("ix_event_room_ts")


def downgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index("ix_event_room_ts", ["site", "room", "ts"], unique=False)
        batch_op.drop_index("ix_event_site_ts_room")
