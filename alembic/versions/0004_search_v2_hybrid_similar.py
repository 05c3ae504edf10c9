"""Filter language, search v2, hybrid search (chunk tsvector + GIN), more-like-this.

Also: the GIN index on records.metadata becomes jsonb_path_ops (fast containment filters).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from embedplat.db.sqlfiles import read_sql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "embedplat"

# Internal helpers installed by the sql files of this revision (see sql/search.v2.sql).
_HELPERS = (
    "embedplat.nearest_hits(integer, integer, integer, vector, integer, jsonb, float8, boolean, bigint)",
    "embedplat.hits_statement(text, boolean)",
    "embedplat.metadata_matches_compiled(jsonb, jsonb)",
    "embedplat.compile_filter_node(jsonb, text[], jsonb[])",
    "embedplat.compile_filter(jsonb)",
    "embedplat.restore_search_knobs(text[])",
    "embedplat.apply_search_knobs(jsonb, integer, integer, text)",
    "embedplat.check_query_dimensions(text, vector, integer, text, text)",
    "embedplat.collection_target(text, text)",
    "embedplat.text_query(text)",
    "embedplat.text_query_is_plain(text)",
    "embedplat.filter_is_containment(jsonb)",
    "embedplat.metadata_matches(jsonb, jsonb)",
    "embedplat.filter_operator(jsonb, text, jsonb, text)",
    "embedplat.filter_value_is_operators(text, jsonb)",
    "embedplat.filter_path(text)",
)


def upgrade() -> None:
    # v2 returns more columns: the old function and its row type must go first.
    op.execute("DROP FUNCTION IF EXISTS embedplat.search(text, vector, integer, jsonb)")
    op.execute("DROP TYPE IF EXISTS embedplat.search_hit")

    op.add_column(
        "chunks",
        sa.Column(
            "content_tsv",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector('english'::regconfig, content)", persisted=True),
            nullable=False,
        ),
        schema=S,
    )
    op.create_index(
        "ix_chunks_content_tsv", "chunks", ["content_tsv"], schema=S, postgresql_using="gin"
    )

    # Filters' containment form (metadata @> ...) is what the GIN index on metadata serves;
    # jsonb_path_ops indexes key paths with their values, about 10x faster for it than the
    # default jsonb_ops (which intersects a posting list per key and per value).
    op.drop_index("ix_records_metadata", table_name="records", schema=S)
    op.create_index(
        "ix_records_metadata",
        "records",
        ["metadata"],
        schema=S,
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )

    op.execute(read_sql("filters.v1.sql"))
    op.execute(read_sql("search.v2.sql"))
    op.execute(read_sql("hybrid_search.v1.sql"))
    op.execute(read_sql("similar.v1.sql"))


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION IF EXISTS embedplat.similar(text, text, integer, jsonb, integer, integer)"
    )
    op.execute(
        "DROP FUNCTION IF EXISTS embedplat.hybrid_search("
        "text, text, vector, integer, jsonb, float8, float8, integer, integer, integer)"
    )
    op.execute(
        "DROP FUNCTION IF EXISTS embedplat.search("
        "text, vector, integer, jsonb, float8, boolean, integer, integer)"
    )
    for helper in _HELPERS:
        op.execute(f"DROP FUNCTION IF EXISTS {helper}")
    op.execute("DROP TYPE IF EXISTS embedplat.hybrid_hit")
    op.execute("DROP TYPE IF EXISTS embedplat.search_hit")
    op.drop_index("ix_records_metadata", table_name="records", schema=S)
    op.create_index(
        "ix_records_metadata", "records", ["metadata"], schema=S, postgresql_using="gin"
    )
    op.drop_index("ix_chunks_content_tsv", table_name="chunks", schema=S)
    op.drop_column("chunks", "content_tsv", schema=S)
    # Back to v1: its file creates the v1 row type and function again.
    op.execute(read_sql("search.v1.sql"))
