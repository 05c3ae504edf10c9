"""The filter compiler as the one definition of the filter language; near-duplicate functions
take a double precision threshold; hybrid search is silent on stop-word-only queries.

- filters.v2.sql: metadata_matches runs the compiled predicate (the v1 interpreter and
  filter_operator go, and so does metadata_matches_compiled, now the same as metadata_matches);
  filter_check_operator validates operators for the compiler.
- duplicates.v2.sql: near_duplicate_record_pairs / near_duplicates / duplicate_groups take
  ``threshold float8`` (v1: real), so drivers sending double precision find them.
- hybrid_search.v2.sql: text_query runs with client_min_messages = warning.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from embedplat.db.sqlfiles import read_sql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DUPLICATE_FUNCTIONS = ("duplicate_groups", "near_duplicates", "near_duplicate_record_pairs")


def upgrade() -> None:
    op.execute(read_sql("filters.v2.sql"))
    op.execute("DROP FUNCTION IF EXISTS embedplat.metadata_matches_compiled(jsonb, jsonb)")
    op.execute("DROP FUNCTION IF EXISTS embedplat.filter_operator(jsonb, text, jsonb, text)")

    # Another argument type is another function: the real versions go, the float8 ones come.
    for name in _DUPLICATE_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS embedplat.{name}(text, real, integer)")
    op.execute(read_sql("duplicates.v2.sql"))

    op.execute(read_sql("hybrid_search.v2.sql"))


def downgrade() -> None:
    # hybrid_search.v1.sql creates its row type too, so it is re-applied from scratch.
    op.execute(
        "DROP FUNCTION IF EXISTS embedplat.hybrid_search("
        "text, text, vector, integer, jsonb, float8, float8, integer, integer, integer)"
    )
    op.execute("DROP FUNCTION IF EXISTS embedplat.text_query(text)")
    op.execute("DROP FUNCTION IF EXISTS embedplat.text_query_is_plain(text)")
    op.execute("DROP TYPE IF EXISTS embedplat.hybrid_hit")
    op.execute(read_sql("hybrid_search.v1.sql"))

    for name in _DUPLICATE_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS embedplat.{name}(text, float8, integer)")
    op.execute(read_sql("duplicates.v1.sql"))

    # filters.v1.sql re-creates every v1 function (interpreter included) over the v2 ones.
    op.execute(read_sql("filters.v1.sql"))
    op.execute("DROP FUNCTION IF EXISTS embedplat.filter_check_operator(text, text, jsonb)")
