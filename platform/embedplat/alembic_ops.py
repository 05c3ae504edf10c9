"""Alembic operations for an app's **own** migrations: ``op.embedplat_attach`` / ``op.embedplat_detach``.

Import this module in the app's ``env.py`` (or in the migration itself) and the operations
are registered on Alembic's ``op``::

    import embedplat.alembic_ops  # noqa: F401  (registers op.embedplat_attach/_detach)

    def upgrade() -> None:
        op.create_table("articles", ...)
        op.embedplat_attach("articles", "public.articles", text_columns=["title", "body"],
                            metadata_columns=["author"])

    def downgrade() -> None:
        op.embedplat_detach("articles", drop_records=True)
        op.drop_table("articles")

The embedplat schema must already be installed (``embedplat init``) in the same database.
The attach runs inside the migration's transaction, and so does its back-fill
(``embedplat.attach_reconcile``): right for the new or small tables migrations usually attach.
For a large table pass ``backfill=False`` and run the back-fill in short transactions
afterwards (``embedplat.attach.backfill``).

Each operation has a reverse (:meth:`AttachTableOp.reverse` is a detach that drops the
records; a detach that knows the attach arguments reverses to that attach), for tools that
derive downgrades from upgrades.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic.operations import MigrateOperation, Operations
from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

from embedplat.attach import DEFAULT_BACKFILL_BATCH
from embedplat.config import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL

__all__ = ["AttachTableOp", "DetachTableOp"]


def _names(values: Sequence[str] | str | None) -> list[str] | None:
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)


@Operations.register_operation("embedplat_attach")
class AttachTableOp(MigrateOperation):
    """Attach an app table to an embedplat collection (``embedplat.attach``), then back-fill."""

    def __init__(
        self,
        collection: str,
        table: str,
        *,
        text_columns: Sequence[str] | str,
        id_columns: Sequence[str] | str | None = None,
        metadata_columns: Sequence[str] | str | None = None,
        filter_column: str | None = None,
        model: str = DEFAULT_MODEL,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        inline_rows: int | None = None,
        backfill: bool = True,
        batch_size: int = DEFAULT_BACKFILL_BATCH,
    ) -> None:
        self.collection = collection
        self.table = table
        self.text_columns = _names(text_columns)
        self.id_columns = _names(id_columns)
        self.metadata_columns = _names(metadata_columns)
        self.filter_column = filter_column
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self.inline_rows = inline_rows
        self.backfill = backfill
        self.batch_size = batch_size

    @classmethod
    def embedplat_attach(
        cls, operations: Operations, collection: str, table: str, **options: Any
    ) -> None:
        """``op.embedplat_attach(collection, table, text_columns=[...], ...)``."""
        operations.invoke(cls(collection, table, **options))

    def reverse(self) -> DetachTableOp:
        """Detach again, dropping the records the attach created."""
        return DetachTableOp(self.collection, drop_records=True, attached=self)


@Operations.register_operation("embedplat_detach")
class DetachTableOp(MigrateOperation):
    """Detach a collection from its table (``embedplat.detach``); the table is not touched
    but for its embedplat triggers."""

    def __init__(
        self,
        collection: str,
        *,
        drop_records: bool = False,
        attached: AttachTableOp | None = None,
    ) -> None:
        self.collection = collection
        self.drop_records = drop_records
        self.attached = attached

    @classmethod
    def embedplat_detach(
        cls,
        operations: Operations,
        collection: str,
        *,
        drop_records: bool = False,
        attached: AttachTableOp | None = None,
    ) -> None:
        """``op.embedplat_detach(collection, drop_records=False)``."""
        operations.invoke(cls(collection, drop_records=drop_records, attached=attached))

    def reverse(self) -> AttachTableOp:
        """The attach this detach undid (only known when it was given)."""
        if self.attached is None:
            raise ValueError(
                f"the detach of {self.collection!r} cannot be reversed without the attach "
                "arguments (pass attached=AttachTableOp(...))"
            )
        return self.attached


@Operations.implementation_for(AttachTableOp)
def _attach(operations: Operations, operation: AttachTableOp) -> None:
    names = ARRAY(Text())
    statement = text(
        "SELECT embedplat.attach(:collection, CAST(:source AS regclass), "
        "id_columns => CAST(:id_columns AS text[]), "
        "text_columns => CAST(:text_columns AS text[]), "
        "metadata_columns => CAST(:metadata_columns AS text[]), "
        "filter_column => :filter_column, model => :model, "
        "chunk_tokens => :chunk_tokens, chunk_overlap => :chunk_overlap, "
        "inline_rows => CAST(:inline_rows AS integer))"
    ).bindparams(
        bindparam("collection", operation.collection),
        bindparam("source", operation.table),
        bindparam("id_columns", operation.id_columns, type_=names),
        bindparam("text_columns", operation.text_columns, type_=names),
        bindparam("metadata_columns", operation.metadata_columns, type_=names),
        bindparam("filter_column", operation.filter_column),
        bindparam("model", operation.model),
        bindparam("chunk_tokens", operation.chunk_tokens),
        bindparam("chunk_overlap", operation.chunk_overlap),
        bindparam("inline_rows", operation.inline_rows),
    )
    operations.execute(statement)
    if operation.backfill:
        operations.execute(
            text("SELECT * FROM embedplat.attach_reconcile(:collection, :batch_size)").bindparams(
                bindparam("collection", operation.collection),
                bindparam("batch_size", operation.batch_size),
            )
        )


@Operations.implementation_for(DetachTableOp)
def _detach(operations: Operations, operation: DetachTableOp) -> None:
    operations.execute(
        text("SELECT embedplat.detach(:collection, drop_records => :drop_records)").bindparams(
            bindparam("collection", operation.collection),
            bindparam("drop_records", operation.drop_records),
        )
    )
