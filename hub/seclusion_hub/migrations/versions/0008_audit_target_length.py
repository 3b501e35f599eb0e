"""an audit entry's target holds "site/room" (up to 127 characters)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A room's maintenance change is audited against "site/room": contract 1 allows 63 characters for
    # each, and PostgreSQL refused a target longer than the 64 this column held.
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.alter_column("target_id", existing_type=sa.String(64), type_=sa.String(200))


def downgrade() -> None:
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.alter_column("target_id", existing_type=sa.String(200), type_=sa.String(64))
