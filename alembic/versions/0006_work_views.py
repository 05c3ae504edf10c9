"""Views that define each unit of work once: changed, stale and parked records; pending and
claimable queue rows. ``failed_work`` is rebuilt on top of them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from embedplat.db.sqlfiles import read_sql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(read_sql("work.v1.sql"))
    op.execute(read_sql("failed_work.v2.sql"))


def downgrade() -> None:
    # failed_work v1 repeats its condition inline; put it back before its new base goes.
    op.execute(read_sql("failed_work.v1.sql"))
    op.execute("DROP VIEW IF EXISTS embedplat.claimable_work")
    op.execute("DROP VIEW IF EXISTS embedplat.pending_work")
    op.execute("DROP VIEW IF EXISTS embedplat.parked_records")
    op.execute("DROP VIEW IF EXISTS embedplat.stale_records")
    op.execute("DROP VIEW IF EXISTS embedplat.changed_records")
