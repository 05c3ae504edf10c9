"""Core schema: models, collections, records, chunks, embeddings, embedding queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.dialects import postgresql

from embedplat.db.sqlfiles import read_sql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "embedplat"


def _created_at(name: str = "created_at") -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(read_sql("text_sha256.v1.sql"))

    op.create_table(
        "embedding_models",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("normalized", sa.Boolean(), nullable=False),
        sa.Column("distance", sa.Text(), server_default="cosine", nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        _created_at(),
        sa.CheckConstraint("dimensions > 0", name="ck_embedding_models_dimensions_positive"),
        sa.CheckConstraint(
            "distance IN ('cosine', 'l2', 'ip')", name="ck_embedding_models_distance_known"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_embedding_models"),
        sa.UniqueConstraint("name", "fingerprint", name="uq_embedding_models_name_fingerprint"),
        schema=S,
    )

    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("chunk_tokens", sa.Integer(), nullable=False),
        sa.Column("chunk_overlap", sa.Integer(), nullable=False),
        sa.Column("active_model_id", sa.Integer(), nullable=True),
        sa.Column("backfill_model_id", sa.Integer(), nullable=True),
        sa.Column(
            "index_options",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        _created_at(),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 200", name="ck_collections_name_length"),
        sa.CheckConstraint("chunk_tokens > 0", name="ck_collections_chunk_tokens_positive"),
        sa.CheckConstraint(
            "chunk_overlap >= 0 AND chunk_overlap < chunk_tokens",
            name="ck_collections_chunk_overlap_range",
        ),
        sa.ForeignKeyConstraint(
            ["active_model_id"],
            [f"{S}.embedding_models.id"],
            name="fk_collections_active_model_id_embedding_models",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["backfill_model_id"],
            [f"{S}.embedding_models.id"],
            name="fk_collections_backfill_model_id_embedding_models",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_collections"),
        sa.UniqueConstraint("name", name="uq_collections_name"),
        schema=S,
    )

    op.create_table(
        "records",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "content_hash",
            sa.LargeBinary(),
            sa.Computed("embedplat.text_sha256(content)", persisted=True),
            nullable=False,
        ),
        sa.Column("chunked_hash", sa.LargeBinary(), nullable=True),
        sa.Column("chunk_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("chunk_error", sa.Text(), nullable=True),
        _created_at(),
        _created_at("updated_at"),
        _created_at("content_changed_at"),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            [f"{S}.collections.id"],
            name="fk_records_collection_id_collections",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_records"),
        sa.UniqueConstraint(
            "collection_id", "external_id", name="uq_records_collection_id_external_id"
        ),
        schema=S,
    )
    op.create_index(
        "ix_records_stale",
        "records",
        ["collection_id", "id"],
        schema=S,
        postgresql_where=sa.text("chunked_hash IS DISTINCT FROM content_hash"),
    )
    op.create_index(
        "ix_records_metadata", "records", ["metadata"], schema=S, postgresql_using="gin"
    )

    op.create_table(
        "chunks",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("char_start", sa.Integer(), nullable=False),
        sa.Column("char_end", sa.Integer(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column(
            "text_hash",
            sa.LargeBinary(),
            sa.Computed("embedplat.text_sha256(content)", persisted=True),
            nullable=False,
        ),
        _created_at(),
        sa.CheckConstraint(
            "char_start >= 0 AND char_end >= char_start", name="ck_chunks_span_valid"
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            [f"{S}.collections.id"],
            name="fk_chunks_collection_id_collections",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["record_id"],
            [f"{S}.records.id"],
            name="fk_chunks_record_id_records",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_chunks"),
        schema=S,
    )
    op.create_index("ix_chunks_record_id_ordinal", "chunks", ["record_id", "ordinal"], schema=S)
    op.create_index("ix_chunks_collection_id", "chunks", ["collection_id"], schema=S)

    op.create_table(
        "embeddings",
        sa.Column("chunk_id", sa.BigInteger(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("text_hash", sa.LargeBinary(), nullable=False),
        sa.Column("embedding", VECTOR(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["chunk_id"],
            [f"{S}.chunks.id"],
            name="fk_embeddings_chunk_id_chunks",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            [f"{S}.collections.id"],
            name="fk_embeddings_collection_id_collections",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            [f"{S}.embedding_models.id"],
            name="fk_embeddings_model_id_embedding_models",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["record_id"],
            [f"{S}.records.id"],
            name="fk_embeddings_record_id_records",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("chunk_id", "model_id", name="pk_embeddings"),
        schema=S,
    )
    op.create_index(
        "ix_embeddings_collection_id_model_id",
        "embeddings",
        ["collection_id", "model_id"],
        schema=S,
    )

    op.create_table(
        "embedding_queue",
        sa.Column("chunk_id", sa.BigInteger(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("text_hash", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        _created_at("available_at"),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("leased_by", sa.Text(), nullable=True),
        _created_at("enqueued_at"),
        sa.CheckConstraint("state IN ('pending', 'failed')", name="ck_embedding_queue_state_known"),
        sa.ForeignKeyConstraint(
            ["chunk_id"],
            [f"{S}.chunks.id"],
            name="fk_embedding_queue_chunk_id_chunks",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            [f"{S}.collections.id"],
            name="fk_embedding_queue_collection_id_collections",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("chunk_id", name="pk_embedding_queue"),
        schema=S,
    )
    op.create_index(
        "ix_embedding_queue_claimable",
        "embedding_queue",
        ["collection_id", "available_at"],
        schema=S,
        postgresql_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    for table in ("embedding_queue", "embeddings", "chunks", "records", "collections"):
        op.drop_table(table, schema=S)
    op.drop_table("embedding_models", schema=S)
    op.execute("DROP FUNCTION IF EXISTS embedplat.text_sha256(text)")
    # The vector extension stays: other schemas may use it.
