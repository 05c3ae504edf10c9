"""Leases of a dead holder are claimable at once: liveness locks, claimable_work v2, and the
lease_holders view for `status`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from embedplat.db.sqlfiles import read_sql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(read_sql("work.v2.sql"))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS embedplat.lease_holders")
    op.execute(read_sql("work.v1.sql"))  # claimable_work v1; the other views are unchanged
    op.execute("DROP FUNCTION IF EXISTS embedplat.lease_holder_key(text)")
    op.execute("DROP VIEW IF EXISTS embedplat.live_lease_holders")
