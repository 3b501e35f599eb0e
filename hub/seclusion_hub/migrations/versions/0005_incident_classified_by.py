"""who last set a completed record's classification

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 20:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Records completed before it: their classification was set by whoever recorded them, as far as the
    # hub knows (any later change is in the audit log).
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.add_column(sa.Column("classified_by", sa.String(length=200), nullable=True))
    op.execute("UPDATE incident SET classified_by = recorded_by WHERE recorded_by IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.drop_column("classified_by")
