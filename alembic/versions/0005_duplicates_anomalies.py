"""Near-duplicates, duplicate groups and anomaly scores in SQL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from embedplat.db.sqlfiles import read_sql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(read_sql("nearest_chunks.v1.sql"))
    op.execute(read_sql("duplicates.v1.sql"))
    op.execute(read_sql("anomalies.v1.sql"))


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS embedplat.anomaly_scores(text, integer, text)")
    op.execute("DROP FUNCTION IF EXISTS embedplat.duplicate_groups(text, real, integer)")
    op.execute("DROP FUNCTION IF EXISTS embedplat.near_duplicates(text, real, integer)")
    op.execute("DROP FUNCTION IF EXISTS embedplat.near_duplicate_record_pairs(text, real, integer)")
    op.execute("DROP FUNCTION IF EXISTS embedplat.bulk_probe_ef_search(jsonb, integer)")
    op.execute(
        "DROP FUNCTION IF EXISTS "
        "embedplat.nearest_chunks(vector, integer, integer, integer, bigint, integer, bigint[])"
    )
    op.execute(
        "DROP FUNCTION IF EXISTS embedplat.nearest_records_mean_distance("
        "vector, integer, integer, integer, bigint, integer, integer)"
    )
