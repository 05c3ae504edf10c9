"""Content hash: embedplat.text_sha256 gets a body PostgreSQL inlines (text_sha256.v2.sql).
v1's convert_to() is only STABLE, so the IMMUTABLE wrapper could not be inlined and ran as a
full SQL-function call for every record and chunk written (the generated columns
records.content_hash and chunks.text_hash); v2 gives the same bytes from immutable steps only.

CREATE OR REPLACE keeps the function's OID, which the generated columns' expressions refer to,
and PostgreSQL allows it while they do; the values already stored stay valid because v2's
result equals v1's for every text (the proof is in the SQL file), so nothing is recomputed.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from embedplat.db.sqlfiles import read_sql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(read_sql("text_sha256.v2.sql"))


def downgrade() -> None:
    op.execute(read_sql("text_sha256.v1.sql"))
