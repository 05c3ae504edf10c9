"""Search: search and hybrid_search take the model the query vector was embedded with
(query_model, query_fingerprint) and refuse a vector of another model than the collection's
active one, naming both (search.v5.sql, helper check_query_model). Until now only the
dimension was checked, so a query embedded just before a model switch and sent just after it
was compared with the new model's vectors whenever both models had the same dimensions.

The two new trailing arguments make new signatures: the old functions are dropped first, or
every call would be ambiguous between the two forms. Functions keep PostgreSQL's default
EXECUTE for PUBLIC (install_roles grants on tables only), so no grants are re-applied.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from embedplat.db.sqlfiles import function_sql, read_sql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEARCH_V2 = "embedplat.search(text, vector, integer, jsonb, float8, boolean, integer, integer)"
_HYBRID_V1 = (
    "embedplat.hybrid_search("
    "text, text, vector, integer, jsonb, float8, float8, integer, integer, integer)"
)
_SEARCH_V5 = (
    "embedplat.search(text, vector, integer, jsonb, float8, boolean, integer, integer, text, text)"
)
_HYBRID_V5 = (
    "embedplat.hybrid_search("
    "text, text, vector, integer, jsonb, float8, float8, integer, integer, integer, text, text)"
)
_CHECK_QUERY_MODEL = "embedplat.check_query_model(text, integer, text, text, text)"


def upgrade() -> None:
    op.execute(f"DROP FUNCTION {_SEARCH_V2}")
    op.execute(f"DROP FUNCTION {_HYBRID_V1}")
    op.execute(read_sql("search.v5.sql"))


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {_HYBRID_V5}")
    op.execute(f"DROP FUNCTION {_SEARCH_V5}")
    op.execute(f"DROP FUNCTION {_CHECK_QUERY_MODEL}")
    # The previous definitions with their comments; the rest of both files (types, helpers
    # that search.v3 / v4 and hybrid_search.v2 replaced) stays as it is.
    op.execute(function_sql("search.v2.sql", "embedplat.search"))
    op.execute(_comment_sql("search.v2.sql", _SEARCH_V2))
    op.execute(function_sql("hybrid_search.v1.sql", "embedplat.hybrid_search"))
    op.execute(_comment_sql("hybrid_search.v1.sql", _HYBRID_V1))


def _comment_sql(name: str, signature: str) -> str:
    """The ``COMMENT ON FUNCTION signature IS '...';`` statement of ``sql/<name>``."""
    text = read_sql(name)
    start = text.index(f"COMMENT ON FUNCTION {signature} IS")
    return text[start : text.index("';\n", start) + 2]
