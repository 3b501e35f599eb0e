"""the events' timeline index orders by time within a site, so that new events add to its last pages

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 22:55:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite commits each index statement on its own: a power cut between them and the version stamp leaves
# one done, so each is written to be run again (`if_not_exists`, `if_exists`).


def upgrade() -> None:
    # The new index is built before the old one goes: an episode's timeline always has one to use.
    op.create_index(
        "ix_event_site_ts_room", "event", ["site", "ts", "room"], unique=False, if_not_exists=True
    )
    op.drop_index("ix_event_room_ts", table_name="event", if_exists=True)


def downgrade() -> None:
    op.create_index("ix_event_room_ts", "event", ["site", "room", "ts"], unique=False, if_not_exists=True)
    op.drop_index("ix_event_site_ts_room", table_name="event", if_exists=True)
