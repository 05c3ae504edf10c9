"""Attached tables, v2: bulk statements queue their keys; a first back-fill skips its prune.

- attachments.inline_rows (default 1,000): a statement writing more source rows than this
  queues their keys in the new table embedplat.attach_pending instead of writing records in
  the writer's transaction; embedplat.attach_drain (run by every sync) derives them later.
  Deletes stay synchronous at any size.
- ix_records_metadata (the GIN index on records.metadata) without fastupdate: with it, the
  statement that finds the pending list over gin_pending_list_limit merges it in the
  foreground, and that statement may be an app's one-row write through an attach trigger
  (PostgreSQL's GIN documentation, "GIN Tips and Tricks", on response-time fluctuations); a
  record has a few metadata keys, so direct insertion is cheap.
- attachments.backfill_prune: false after a first attach to a collection without records,
  whose back-fill then has no prune pass.
- attach.v2.sql: attach() gains inline_rows (so the old signature is dropped), the generator
  also creates each attachment's drain function, attach_backfill skips the prune when it can,
  attachment_status gains inline_rows and pending_rows. Existing attachments get their
  functions regenerated.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from embedplat.db.sqlfiles import function_sql, read_sql, view_sql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "embedplat"
_OLD_ATTACH = (
    "attach(text, regclass, text[], text[], text[], text, text, integer, integer, boolean)"
)
_NEW_ATTACH = (
    "attach(text, regclass, text[], text[], text[], text, text, integer, integer, boolean, integer)"
)
# Functions attach.v2.sql adds (the downgrade drops them).
_NEW_FUNCTIONS = (
    "attach_drain(text, integer)",
    "attach_apply(integer, text[])",
    "attach_prune_sql(embedplat.attachments, text[])",
    "attach_key_parse_sql(embedplat.attachments, text[], text)",
    "attach_key_types(embedplat.attachments)",
    "attach_backfill_done(integer)",
    "attach_drain_function_name(integer)",
)
# Functions attach.v2.sql redefines: the downgrade takes them back from attach.v1.sql.
_REDEFINED = ("attach_create_function", "attach_drop_triggers", "attach_backfill")

# Regenerate every attachment's functions with the generator now installed; one whose columns
# are gone is marked unhealthy (a refresh repairs it), as its trigger would have marked it.
_REGENERATE = """
DO $$
DECLARE
    a embedplat.attachments;
BEGIN
    FOR a IN SELECT * FROM embedplat.attachments LOOP
        BEGIN
            PERFORM embedplat.attach_create_function(a);
        EXCEPTION WHEN OTHERS THEN
            PERFORM embedplat.attach_mark_unhealthy(a.collection_id, SQLERRM);
        END;
    END LOOP;
END $$
"""

_READABLE = "collection_id IN (SELECT g.id FROM embedplat.granted_collections(false) AS g(id))"
_WORKER = "(SELECT embedplat.is_worker())"


def upgrade() -> None:
    op.add_column(
        "attachments",
        sa.Column("backfill_prune", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        schema=S,
    )
    op.add_column(
        "attachments",
        sa.Column("inline_rows", sa.Integer(), server_default="1000", nullable=False),
        schema=S,
    )
    op.create_table(
        "attach_pending",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("external_ids", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column(
            "queued_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            [f"{S}.attachments.collection_id"],
            name="fk_attach_pending_collection_id_attachments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_attach_pending"),
        schema=S,
    )
    op.create_index(
        "ix_attach_pending_collection_id_id",
        "attach_pending",
        ["collection_id", "id"],
        schema=S,
    )
    # Like every table holding a collection's data (0011): readers see their collections'
    # rows, workers all; the trigger and drain functions write it with their owner's rights.
    op.execute(f"ALTER TABLE {S}.attach_pending ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY attach_pending_read ON {S}.attach_pending FOR SELECT USING ({_READABLE})"
    )
    op.execute(
        f"CREATE POLICY attach_pending_worker ON {S}.attach_pending FOR ALL "
        f"USING ({_WORKER}) WITH CHECK ({_WORKER})"
    )
    op.execute(f"ALTER INDEX {S}.ix_records_metadata SET (fastupdate = off)")
    op.execute(f"DROP FUNCTION {S}.{_OLD_ATTACH}")
    op.execute(read_sql("attach.v2.sql"))
    op.execute(f"ALTER VIEW {S}.attachment_status SET (security_invoker = true)")
    op.execute(_REGENERATE)
    op.execute("SELECT embedplat.install_roles()")


def downgrade() -> None:
    # Queued keys are derived now (v1 has no queue), then v1's definitions come back.
    op.execute(
        "SELECT embedplat.attach_apply(p.collection_id, p.external_ids) "
        "FROM embedplat.attach_pending p ORDER BY p.id"
    )
    op.execute(
        "DO $$ DECLARE cid integer; BEGIN "
        "FOR cid IN SELECT collection_id FROM embedplat.attachments LOOP "
        "EXECUTE format('DROP FUNCTION IF EXISTS %s(integer)', "
        "embedplat.attach_drain_function_name(cid)); "
        "END LOOP; END $$"
    )
    op.execute(f"DROP VIEW {S}.attachment_status")
    op.execute(f"DROP FUNCTION {S}.{_NEW_ATTACH}")
    for name in _REDEFINED:
        op.execute(function_sql("attach.v1.sql", f"{S}.{name}"))
    op.execute(function_sql("attach.v1.sql", f"{S}.attach"))
    op.execute(
        "COMMENT ON FUNCTION embedplat."
        + _OLD_ATTACH
        + " IS 'Attach an app table to a collection: triggers keep its records in step; "
        "back-fill the rows already there with embedplat.attach_backfill().'"
    )
    for signature in _NEW_FUNCTIONS:
        op.execute(f"DROP FUNCTION {S}.{signature}")
    op.drop_table("attach_pending", schema=S)
    op.drop_column("attachments", "inline_rows", schema=S)
    op.drop_column("attachments", "backfill_prune", schema=S)
    op.execute(view_sql("attach.v1.sql", f"{S}.attachment_status"))
    op.execute(f"ALTER INDEX {S}.ix_records_metadata RESET (fastupdate)")
    op.execute(f"ALTER VIEW {S}.attachment_status SET (security_invoker = true)")
    op.execute(_REGENERATE)
    op.execute("SELECT embedplat.install_roles()")
