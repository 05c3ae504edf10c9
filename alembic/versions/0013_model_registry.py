"""Model registry: local model folders registered by name (`embedplat model add`).

- registered_models: name -> the folder's absolute path, its fingerprint (the hash every
  process compares its own copy of the folder with before it embeds), and what its config
  files say (dimensions, max sequence length, Normalize module, distance, prompts). Every
  process that embeds reads it (collections are looked up joined to it), so the CLI, Python and
  the workers resolve a registered name to the same files.
- No row-level security: like embedding_models the table holds no collection's data, and every
  role reads it (install_roles grants SELECT on every table) to resolve the names of the
  collections it may use. Only the owner writes it (no role gets INSERT, UPDATE or DELETE).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "embedplat"


def _now(name: str) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("max_seq_length", sa.Integer(), nullable=True),
        sa.Column(
            "normalize_module", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("distance", sa.Text(), server_default="cosine", nullable=False),
        sa.Column(
            "prompts",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("default_prompt_name", sa.Text(), nullable=True),
        _now("registered_at"),
        _now("updated_at"),
        sa.CheckConstraint(
            "length(name) BETWEEN 1 AND 200", name="ck_registered_models_name_length"
        ),
        sa.CheckConstraint("dimensions > 0", name="ck_registered_models_dimensions_positive"),
        sa.CheckConstraint(
            "max_seq_length > 0", name="ck_registered_models_max_seq_length_positive"
        ),
        sa.CheckConstraint(
            "distance IN ('cosine', 'l2', 'ip')", name="ck_registered_models_distance_known"
        ),
        sa.CheckConstraint(
            "jsonb_typeof(prompts) = 'object'", name="ck_registered_models_prompts_object"
        ),
        sa.PrimaryKeyConstraint("name", name="pk_registered_models"),
        schema=S,
    )
    # The roles' privileges cover the new table (SELECT for every role).
    op.execute("SELECT embedplat.install_roles()")


def downgrade() -> None:
    op.drop_table("registered_models", schema=S)
