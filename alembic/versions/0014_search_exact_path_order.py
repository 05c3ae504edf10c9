"""Search: nearest_hits' exact path (a filter matching few records) looks up each record's
chunks, then each chunk's vector, in that fixed order (search.v4.sql). Before the tables were
analyzed the planner could scan every vector of the model once per matching record.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from embedplat.db.sqlfiles import function_sql, read_sql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(read_sql("search.v4.sql"))


def downgrade() -> None:
    op.execute(function_sql("search.v2.sql", "embedplat.nearest_hits"))
