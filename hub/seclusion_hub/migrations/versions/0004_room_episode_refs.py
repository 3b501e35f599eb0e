"""a room's stored state names its episodes' rows instead of copying them

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 19:30:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing rows keep their episodes inside `state` (both ids NULL) and load as before.
    with op.batch_alter_table("room_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("episode_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("last_episode_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    # Put the referenced episodes back into the state first: without them a room would forget its
    # open episode.
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT site, room, state, episode_id, last_episode_id FROM room_state")
    ).fetchall()
    for site, room, state, episode_id, last_episode_id in rows:
        if episode_id is None and last_episode_id is None:
            continue
        whole = json.loads(state)
        for name, ref in (("episode", episode_id), ("last_episode", last_episode_id)):
            if ref is None:
                continue
            data = conn.execute(sa.text("SELECT data FROM episode WHERE id = :id"), {"id": ref}).scalar()
            if data is not None:
                whole[name] = json.loads(data)
        conn.execute(
            sa.text("UPDATE room_state SET state = :state WHERE site = :site AND room = :room"),
            {"state": json.dumps(whole), "site": site, "room": room},
        )
    with op.batch_alter_table("room_state", schema=None) as batch_op:
        batch_op.drop_column("last_episode_id")
        batch_op.drop_column("episode_id")
