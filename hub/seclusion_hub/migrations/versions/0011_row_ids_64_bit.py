"""the keys of the tables that only grow are 64-bit on PostgreSQL

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 01:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tables whose rows are never deleted, keyed by a number the database gives (models.ROW_ID).
GROWING = (
    "event",
    "dead_letter",
    "incident_addendum",
    "parent_contact",
    "timeline_note",
    "api_token",
    "audit",
    "delivery_attempt",
)


def _widen(kind: str) -> None:
    """Each key and its sequence to `kind` (BIGINT, or INTEGER going down). SQLite's INTEGER key is its
    64-bit rowid already: nothing to do there."""
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    for table in GROWING:
        op.alter_column(table, "id", type_=sa.BigInteger() if kind == "BIGINT" else sa.Integer())
        seq = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()
        if seq is not None:
            # A SERIAL's sequence is AS integer: it would stop at 2^31 - 1 whatever the column's type.
            op.execute(f"ALTER SEQUENCE {seq} AS {kind}")


def upgrade() -> None:
    _widen("BIGINT")


def downgrade() -> None:
    _widen("INTEGER")
