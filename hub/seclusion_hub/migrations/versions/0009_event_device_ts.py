"""an event keeps the time it was applied at, and the device's own `ts` when that differs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 17:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import seclusion_hub.models

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Semantics 4.5 times a reading from a clock that is off by the clock's measured offset (or, for a
    # clock that reads no plausible time, on arrival). `event.ts` held the device's own time, so an
    # episode's timeline, read by time, missed such a device's readings. From now on `ts` is the time
    # the reading was applied at and `device_ts` the device's own, when the two differ. Rows stored
    # before keep the device's time in `ts`, as they were read.
    op.add_column(
        "event", sa.Column("device_ts", seclusion_hub.models.UTCDateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    # Back to `ts` as the device's own time, which is what the code before 0009 reads it as.
    op.execute("UPDATE event SET ts = device_ts WHERE device_ts IS NOT NULL")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_column("device_ts")
