"""Change notifications: NOTIFY embedplat_changes when records are inserted or their content changes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from embedplat.db.sqlfiles import read_sql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(read_sql("notify_changes.v1.sql"))


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS records_notify_update ON embedplat.records")
    op.execute("DROP TRIGGER IF EXISTS records_notify_insert ON embedplat.records")
    op.execute("DROP FUNCTION IF EXISTS embedplat.notify_record_changes()")
