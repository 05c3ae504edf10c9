"""Attached application tables: embedplat.attachments, the attach/detach/back-fill/reconcile
functions, the generator of the per-attachment trigger functions that keep records in step
(schema embedplat_attach), and the attachment_status view.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from embedplat.db.sqlfiles import read_sql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every function attach.v1.sql creates, by identity arguments (the downgrade drops them).
_FUNCTIONS = (
    "attach_reconcile(text, integer)",
    "attach_backfill(text, integer, boolean)",
    "attach(text, regclass, text[], text[], text[], text, text, integer, integer, boolean)",
    "detach(text, boolean)",
    "attach_create_function(embedplat.attachments)",
    "attach_function_name(integer)",
    "attach_mark_unhealthy(integer, text)",
    "attach_delete_records(bigint[])",
    "attach_upsert_sql(text, text)",
    "attach_rows_sql(embedplat.attachments, text, text)",
    "attach_sql_parts(embedplat.attachments, boolean)",
    "attach_valid_sql(text, text)",
    "attach_input_is_valid(text, text)",
    "attach_text_part(text)",
    "attach_external_id(text[])",
    "attach_drop_triggers(integer, oid)",
    "attach_trigger_name(integer, text)",
)


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "attachments",
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("source_relid", postgresql.OID(), nullable=False),
        sa.Column("source_schema", sa.Text(), nullable=False),
        sa.Column("source_table", sa.Text(), nullable=False),
        sa.Column("id_columns", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("text_columns", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column(
            "metadata_columns",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("filter_column", sa.Text(), nullable=True),
        sa.Column("healthy", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("error_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("backfill_phase", sa.Text(), server_default="forward", nullable=False),
        sa.Column("backfill_cursor", postgresql.ARRAY(sa.Text()), nullable=True),
        _now("backfill_started_at"),
        sa.Column("backfilled_at", sa.DateTime(timezone=True), nullable=True),
        _now("created_at"),
        _now("updated_at"),
        sa.CheckConstraint(
            "backfill_phase IN ('forward', 'prune', 'done')",
            name="ck_attachments_backfill_phase_known",
        ),
        sa.CheckConstraint(
            "cardinality(id_columns) >= 1", name="ck_attachments_id_columns_present"
        ),
        sa.CheckConstraint(
            "cardinality(text_columns) >= 1", name="ck_attachments_text_columns_present"
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["embedplat.collections.id"],
            name="fk_attachments_collection_id_collections",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("collection_id", name="pk_attachments"),
        schema="embedplat",
    )
    op.execute(read_sql("attach.v1.sql"))


def downgrade() -> None:
    # Deleting the attachments drops their triggers from the app tables and their generated
    # trigger functions (attachments_after_delete); the schema of those functions goes last.
    op.execute("DELETE FROM embedplat.attachments")
    op.execute("DROP VIEW IF EXISTS embedplat.attachment_status")
    for signature in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS embedplat.{signature}")
    op.drop_table("attachments", schema="embedplat")
    op.execute("DROP FUNCTION IF EXISTS embedplat.attachments_after_delete()")
    op.execute("DROP SCHEMA IF EXISTS embedplat_attach CASCADE")
