"""SQL search function and the failed-work view.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from embedplat.db.sqlfiles import read_sql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(read_sql("search.v1.sql"))
    op.execute(read_sql("failed_work.v1.sql"))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS embedplat.failed_work")
    op.execute("DROP FUNCTION IF EXISTS embedplat.search(text, vector, integer, jsonb)")
    op.execute("DROP TYPE IF EXISTS embedplat.search_hit")
