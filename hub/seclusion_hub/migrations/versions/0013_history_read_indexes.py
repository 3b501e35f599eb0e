"""indexes for the reads that must not grow with the years of history kept (episodes, records, alerts)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 03:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each on a table written once per episode or record change, never per event (docs/hub.md, "The
# database's indexes"). Each serves a read that otherwise passed over every row the school ever had:
# a list's page (filter, then newest first by time and id, and the keyset cursor), the leaders' period,
# a child's 48 hours. Written to be run again (`if_not_exists`, `if_exists`), as 0006.
INDEXES = (
    ("ix_episode_site_started", "episode", ["site", "started_at", "id"]),
    ("ix_episode_pupil_started", "episode", ["pupil_id", "started_at"]),
    ("ix_incident_site_opened", "incident", ["site", "opened_at", "id"]),
    ("ix_incident_site_status_opened", "incident", ["site", "status", "opened_at", "id"]),
    ("ix_alert_site_raised", "alert", ["site", "raised_at", "id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False, if_not_exists=True)
    # The record list's index on (site, opened_at, id) begins with the site: the site's own index only
    # cost every record's writes.
    op.drop_index("ix_incident_site", table_name="incident", if_exists=True)


def downgrade() -> None:
    op.create_index("ix_incident_site", "incident", ["site"], unique=False, if_not_exists=True)
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table, if_exists=True)
