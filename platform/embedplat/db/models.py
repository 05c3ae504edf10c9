"""Typed SQLAlchemy 2.0 models of schema ``embedplat``.

They match the Alembic migrations exactly (a test runs autogenerate and expects no difference).
Hashes are computed by the database (``embedplat.text_sha256``), so rows written by plain SQL
get them too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, OID, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA = "embedplat"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base bound to schema ``embedplat``."""

    metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class EmbeddingModel(Base):
    """A model vectors were computed with. Vectors of two models are never compared."""

    __tablename__ = "embedding_models"
    __table_args__ = (
        UniqueConstraint("name", "fingerprint"),
        CheckConstraint("dimensions > 0", name="dimensions_positive"),
        CheckConstraint("distance IN ('cosine', 'l2', 'ip')", name="distance_known"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    dimensions: Mapped[int] = mapped_column(Integer, nullable=False)
    normalized: Mapped[bool] = mapped_column(Boolean, nullable=False)
    distance: Mapped[str] = mapped_column(Text, nullable=False, server_default="cosine")
    fingerprint: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now()


class Collection(Base):
    """A named group of records with one chunking configuration and one active model."""

    __tablename__ = "collections"
    __table_args__ = (
        UniqueConstraint("name"),
        CheckConstraint("length(name) BETWEEN 1 AND 200", name="name_length"),
        CheckConstraint("chunk_tokens > 0", name="chunk_tokens_positive"),
        CheckConstraint(
            "chunk_overlap >= 0 AND chunk_overlap < chunk_tokens", name="chunk_overlap_range"
        ),
        CheckConstraint(
            "(switch_model_name IS NULL) = (switch_started_at IS NULL) "
            "AND (backfill_model_id IS NULL OR switch_model_name IS NOT NULL) "
            "AND (kept_model_id IS NULL OR kept_model_id IS DISTINCT FROM active_model_id)",
            name="switch_consistent",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    # The model new embeddings are computed with (a name the embedder registry resolves).
    model_name: Mapped[str] = mapped_column(Text, nullable=False)
    chunk_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    chunk_overlap: Mapped[int] = mapped_column(Integer, nullable=False)
    # Set when the first vector is stored: the exact model (name + fingerprint) searches use.
    active_model_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("embedding_models.id", ondelete="RESTRICT"), nullable=True
    )
    # A second model being back-filled before a switch; searches keep using the active one.
    backfill_model_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("embedding_models.id", ondelete="RESTRICT"), nullable=True
    )
    # The model switch in progress (docs/models.md): the target's name, when it started, whether
    # the active model's vectors stay after the swap, and how many chunks had a vector of the
    # target already. backfill_model_id is the target's row once a process has loaded it.
    switch_model_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    switch_started_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    switch_keep_old: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    switch_reused: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    # The model an earlier switch kept the vectors of (`model switch --keep-old`), for a rollback.
    kept_model_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("embedding_models.id", ondelete="RESTRICT"), nullable=True
    )
    # ANN index parameters, e.g. {"method": "hnsw", "m": 16, "ef_construction": 64}.
    index_options: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = _now()

    active_model: Mapped[EmbeddingModel | None] = relationship(foreign_keys=[active_model_id])


class Record(Base):
    """A source record. ``content_hash`` is computed by the database from ``content``."""

    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("collection_id", "external_id"),
        # The sync engine's work list: records whose content changed since they were chunked.
        Index(
            "ix_records_stale",
            "collection_id",
            "id",
            postgresql_where=text("chunked_hash IS DISTINCT FROM content_hash"),
        ),
        # jsonb_path_ops: serves the filters' containment form (metadata @> ...) fast. No
        # fastupdate (migration 0012): no pending-list merge inside an app's write.
        Index(
            "ix_records_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
            postgresql_with={"fastupdate": "off"},
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    collection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("collections.id", ondelete="CASCADE"), nullable=False
    )
    external_id: Mapped[str] = mapped_column(Text, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    content_hash: Mapped[bytes] = mapped_column(
        LargeBinary, Computed("embedplat.text_sha256(content)", persisted=True)
    )
    # The content hash the current chunks were cut from; NULL until first chunked.
    chunked_hash: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    chunk_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    chunk_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    # When the content last changed: the age of the oldest stale change is the queue lag.
    content_changed_at: Mapped[datetime] = _now()


class Chunk(Base):
    """A piece of a record's content. Unchanged text keeps its row (and embedding) across edits."""

    __tablename__ = "chunks"
    __table_args__ = (
        Index("ix_chunks_record_id_ordinal", "record_id", "ordinal"),
        Index("ix_chunks_collection_id", "collection_id"),
        # Full-text side of embedplat.hybrid_search.
        Index("ix_chunks_content_tsv", "content_tsv", postgresql_using="gin"),
        CheckConstraint("char_start >= 0 AND char_end >= char_start", name="span_valid"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    record_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("records.id", ondelete="CASCADE"), nullable=False
    )
    collection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("collections.id", ondelete="CASCADE"), nullable=False
    )
    ordinal: Mapped[int] = mapped_column(Integer, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    char_start: Mapped[int] = mapped_column(Integer, nullable=False)
    char_end: Mapped[int] = mapped_column(Integer, nullable=False)
    token_count: Mapped[int] = mapped_column(Integer, nullable=False)
    text_hash: Mapped[bytes] = mapped_column(
        LargeBinary, Computed("embedplat.text_sha256(content)", persisted=True)
    )
    # English full-text vector of the chunk text, computed by the database.
    content_tsv: Mapped[str] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english'::regconfig, content)", persisted=True)
    )
    created_at: Mapped[datetime] = _now()


class Embedding(Base):
    """The vector of one chunk under one model, with the chunk hash it was computed from.

    ``embedding`` has no fixed dimension so one column serves every model; ANN indexes are
    per (collection, model) on ``(embedding::vector(N))`` with a matching partial predicate.
    """

    __tablename__ = "embeddings"
    __table_args__ = (Index("ix_embeddings_collection_id_model_id", "collection_id", "model_id"),)

    chunk_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("embedding_models.id", ondelete="RESTRICT"), primary_key=True
    )
    collection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("collections.id", ondelete="CASCADE"), nullable=False
    )
    record_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("records.id", ondelete="CASCADE"), nullable=False
    )
    text_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    embedding: Mapped[Any] = mapped_column(VECTOR(), nullable=False)
    created_at: Mapped[datetime] = _now()


class EmbeddingJob(Base):
    """A chunk that needs a vector for its collection's model.

    Claimed with ``FOR UPDATE SKIP LOCKED`` and a lease; failures count attempts, back off via
    ``available_at`` and park as ``state = 'failed'`` with the last error.
    """

    __tablename__ = "embedding_queue"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'failed')", name="state_known"),
        Index(
            "ix_embedding_queue_claimable",
            "collection_id",
            "for_switch",
            "available_at",
            postgresql_where=text("state = 'pending'"),
        ),
    )

    chunk_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True
    )
    collection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("collections.id", ondelete="CASCADE"), nullable=False
    )
    # false: a vector of the collection's active model; true: of the target of its model
    # switch (both may be queued for one chunk while a switch runs).
    for_switch: Mapped[bool] = mapped_column(
        Boolean, primary_key=True, server_default=text("false")
    )
    # The chunk hash the job was created for; a result for another hash is not stored.
    text_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    available_at: Mapped[datetime] = _now()
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    leased_by: Mapped[str | None] = mapped_column(Text, nullable=True)
    enqueued_at: Mapped[datetime] = _now()


class Attachment(Base):
    """An app table attached to a collection: triggers on the table keep its records in step.

    Created and changed by ``embedplat.attach()`` / ``embedplat.detach()`` (sql/attach.v2.sql);
    ``source_relid`` follows a rename of the table, ``source_schema``/``source_table`` are its
    names when last attached (to report a table that was dropped).
    """

    __tablename__ = "attachments"
    __table_args__ = (
        CheckConstraint(
            "backfill_phase IN ('forward', 'prune', 'done')", name="backfill_phase_known"
        ),
        CheckConstraint("cardinality(id_columns) >= 1", name="id_columns_present"),
        CheckConstraint("cardinality(text_columns) >= 1", name="text_columns_present"),
    )

    collection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    source_relid: Mapped[int] = mapped_column(OID, nullable=False)
    source_schema: Mapped[str] = mapped_column(Text, nullable=False)
    source_table: Mapped[str] = mapped_column(Text, nullable=False)
    # The record's key, text and metadata columns, by name, in order.
    id_columns: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    text_columns: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    metadata_columns: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")
    )
    # A boolean column of the source: only rows where it is true have records.
    filter_column: Mapped[str | None] = mapped_column(Text, nullable=True)
    # False once a trigger failed (last_error says why) until a full back-fill repaired it.
    healthy: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Back-fill progress: 'forward' over the source by key, 'prune' over the records, 'done'.
    backfill_phase: Mapped[str] = mapped_column(Text, nullable=False, server_default="forward")
    backfill_cursor: Mapped[list[str] | None] = mapped_column(ARRAY(Text), nullable=True)
    backfill_started_at: Mapped[datetime] = _now()
    backfilled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Whether the back-fill has a prune pass (not after a first attach to an empty collection).
    backfill_prune: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("true")
    )
    # Statements writing more source rows than this queue their keys (AttachPending) instead
    # of writing records in the writer's transaction (sql/attach.v2.sql).
    inline_rows: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1000")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class AttachPending(Base):
    """Keys of an attached table's rows written by a bulk statement (more rows than the
    attachment's ``inline_rows``), up to 1,000 per row, whose records the next drain derives
    (``embedplat.attach_drain``, run by every sync of the collection)."""

    __tablename__ = "attach_pending"
    __table_args__ = (Index("ix_attach_pending_collection_id_id", "collection_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    collection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("attachments.collection_id", ondelete="CASCADE"), nullable=False
    )
    external_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    queued_at: Mapped[datetime] = _now()


class CollectionGrant(Base):
    """A role's right to read (and with ``can_write``, write) one collection's data.

    Row-level security on every table holding a collection's data admits the collections
    granted to the current user or to a role it inherits from (sql/roles.v1.sql); see
    :mod:`embedplat.grants` and docs/security.md.
    """

    __tablename__ = "collection_grants"

    collection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    # pg_roles.oid: a renamed role keeps its grants.
    role: Mapped[int] = mapped_column(OID, primary_key=True)
    can_write: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    granted_at: Mapped[datetime] = _now()


class ModelRegistration(Base):
    """A local model folder registered under a name (`embedplat model add`, see
    :mod:`embedplat.models`).

    Every process that embeds with the name loads the folder at ``path`` and refuses to when
    its files there do not hash to ``fingerprint``. Holds no collection's data: every role
    reads it, only the owner writes it.
    """

    __tablename__ = "registered_models"
    __table_args__ = (
        CheckConstraint("length(name) BETWEEN 1 AND 200", name="name_length"),
        CheckConstraint("dimensions > 0", name="dimensions_positive"),
        CheckConstraint("max_seq_length > 0", name="max_seq_length_positive"),
        CheckConstraint("distance IN ('cosine', 'l2', 'ip')", name="distance_known"),
        CheckConstraint("jsonb_typeof(prompts) = 'object'", name="prompts_object"),
    )

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    # The folder, absolute: the same path on every machine that embeds with the name.
    path: Mapped[str] = mapped_column(Text, nullable=False)
    fingerprint: Mapped[str] = mapped_column(Text, nullable=False)
    dimensions: Mapped[int] = mapped_column(Integer, nullable=False)
    max_seq_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Whether the model's modules.json ends in a Normalize module.
    normalize_module: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    distance: Mapped[str] = mapped_column(Text, nullable=False, server_default="cosine")
    # config_sentence_transformers.json "prompts", e.g. {"query": "query: "}.
    prompts: Mapped[dict[str, str]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    default_prompt_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    registered_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class RetiredModel(Base):
    """A model a switch stopped using in a collection; its vectors are deleted by
    ``embedplat.purge_retired_vectors`` once no search that started before the swap can still
    be reading them (``embedplat.retire_grace()``)."""

    __tablename__ = "retired_models"

    collection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("embedding_models.id", ondelete="RESTRICT"), primary_key=True
    )
    retired_at: Mapped[datetime] = _now()
