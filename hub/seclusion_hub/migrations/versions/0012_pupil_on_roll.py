"""a child's days on the school's roll: `joined_on` and `left_on` (each optional)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 03:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The leaders' rates count the children on roll in their period; children already on the register
    # have no dates, and count as on roll (as every child did before), until the school gives them.
    op.add_column("pupil", sa.Column("joined_on", sa.Date(), nullable=True))
    op.add_column("pupil", sa.Column("left_on", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pupil", schema=None) as batch_op:
        batch_op.drop_column("left_on")
        batch_op.drop_column("joined_on")
