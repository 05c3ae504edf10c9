"""Search hardening: zero query vectors are refused, filters have a size and a depth limit.

- search.v3.sql: check_query_dimensions also refuses a query vector without direction (all
  zeros, or too close to zero for pgvector's cosine distance), which search and hybrid_search
  answered with similarity NaN on every row.
- similar.v2.sql: similar refuses a record whose vectors average to zero, likewise.
- filters.v3.sql: filter_check_limits (at most 32 levels of nesting, 1,000 nodes), called by
  compile_filter before anything else, so no function taking a filter recurses out of stack or
  spends seconds on a huge filter.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from embedplat.db.sqlfiles import function_sql, read_sql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(read_sql("search.v3.sql"))
    op.execute(read_sql("similar.v2.sql"))
    op.execute(read_sql("filters.v3.sql"))


def downgrade() -> None:
    # The previous versions of the changed functions. search.v2.sql also creates the type
    # search_hit, so only check_query_dimensions is taken from it; the other two files are
    # all CREATE OR REPLACE and are re-applied whole.
    op.execute(function_sql("search.v2.sql", "embedplat.check_query_dimensions"))
    op.execute(read_sql("similar.v1.sql"))
    op.execute(read_sql("filters.v2.sql"))
    op.execute("DROP FUNCTION IF EXISTS embedplat.filter_check_limits(jsonb)")
