"""the incident's classification column kept in step with its record

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 22:10:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # `incident.classification` (0003) was never written: the record's classification lived only in
    # its JSON, which the dashboards' read-only role may not read. The hub now writes the column with
    # every change of the record; records written before get it from their JSON here.
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, record FROM incident")).all()
    for incident_id, raw in rows:
        record: Any = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
        value = record.get("classification") if isinstance(record, dict) else None
        if isinstance(value, str):
            conn.execute(
                sa.text("UPDATE incident SET classification = :value WHERE id = :id"),
                {"value": value, "id": incident_id},
            )


def downgrade() -> None:
    op.execute("UPDATE incident SET classification = NULL")
