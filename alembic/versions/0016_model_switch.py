"""Model switch: a collection moves to another model with no downtime (switch.v1.sql).

- collections: the switch in progress (switch_model_name, switch_started_at, switch_keep_old,
  switch_reused; backfill_model_id, reserved since 0001, is the target's embedding_models row)
  and kept_model_id, the previous model whose vectors a switch kept for a rollback.
- embedding_queue.for_switch: a chunk may have two queue rows, one for the active model
  (false) and one for the switch target (true); the primary key becomes (chunk_id,
  for_switch) and the claim index leads with for_switch, so each kind is claimed in order.
  pending_work and claimable_work (which select q.*) are recreated to carry the column.
- retired_models: models a swap retired, whose vectors embedplat.purge_retired_vectors
  deletes once no search can still be using them. Row-level security as the other tables
  holding a collection's data.
- EXECUTE on model_switch_complete and purge_retired_vectors (SECURITY DEFINER) for
  embedplat_worker only.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from embedplat.db.sqlfiles import read_sql, view_sql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "embedplat"

SWITCH_CONSISTENT = (
    "(switch_model_name IS NULL) = (switch_started_at IS NULL) "
    "AND (backfill_model_id IS NULL OR switch_model_name IS NOT NULL) "
    "AND (kept_model_id IS NULL OR kept_model_id IS DISTINCT FROM active_model_id)"
)

_WORKER_FUNCTIONS = (
    "embedplat.model_switch_complete(text)",
    "embedplat.purge_retired_vectors(integer, integer)",
)

# As in migration 0011: the policies every table holding a collection's data has.
_READABLE = "collection_id IN (SELECT g.id FROM embedplat.granted_collections(false) AS g(id))"
_WORKER = "(SELECT embedplat.is_worker())"


def _work_views() -> None:
    """pending_work and claimable_work as their files define them (q.* takes the new column),
    run by the invoker's rights as every view of the schema (migration 0011)."""
    op.execute(view_sql("work.v1.sql", "embedplat.pending_work"))
    op.execute(view_sql("work.v2.sql", "embedplat.claimable_work"))
    for view in ("pending_work", "claimable_work"):
        op.execute(f"ALTER VIEW {S}.{view} SET (security_invoker = true)")


def upgrade() -> None:
    op.add_column("collections", sa.Column("switch_model_name", sa.Text()), schema=S)
    op.add_column(
        "collections", sa.Column("switch_started_at", sa.DateTime(timezone=True)), schema=S
    )
    op.add_column(
        "collections",
        sa.Column("switch_keep_old", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        schema=S,
    )
    op.add_column(
        "collections",
        sa.Column("switch_reused", sa.BigInteger(), server_default="0", nullable=False),
        schema=S,
    )
    op.add_column("collections", sa.Column("kept_model_id", sa.Integer()), schema=S)
    op.create_foreign_key(
        "fk_collections_kept_model_id_embedding_models",
        "collections",
        "embedding_models",
        ["kept_model_id"],
        ["id"],
        source_schema=S,
        referent_schema=S,
        ondelete="RESTRICT",
    )
    op.create_check_constraint(
        "ck_collections_switch_consistent", "collections", SWITCH_CONSISTENT, schema=S
    )

    op.add_column(
        "embedding_queue",
        sa.Column("for_switch", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        schema=S,
    )
    op.drop_constraint("pk_embedding_queue", "embedding_queue", schema=S, type_="primary")
    op.create_primary_key(
        "pk_embedding_queue", "embedding_queue", ["chunk_id", "for_switch"], schema=S
    )
    op.drop_index("ix_embedding_queue_claimable", table_name="embedding_queue", schema=S)
    op.create_index(
        "ix_embedding_queue_claimable",
        "embedding_queue",
        ["collection_id", "for_switch", "available_at"],
        schema=S,
        postgresql_where=sa.text("state = 'pending'"),
    )
    _work_views()

    op.create_table(
        "retired_models",
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column(
            "retired_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            [f"{S}.collections.id"],
            name="fk_retired_models_collection_id_collections",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            [f"{S}.embedding_models.id"],
            name="fk_retired_models_model_id_embedding_models",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("collection_id", "model_id", name="pk_retired_models"),
        schema=S,
    )
    op.execute(f"ALTER TABLE {S}.retired_models ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY retired_models_read ON {S}.retired_models FOR SELECT USING ({_READABLE})"
    )
    op.execute(
        f"CREATE POLICY retired_models_worker ON {S}.retired_models FOR ALL "
        f"USING ({_WORKER}) WITH CHECK ({_WORKER})"
    )

    op.execute(read_sql("switch.v1.sql"))
    op.execute(f"ALTER VIEW {S}.model_switches SET (security_invoker = true)")
    grants = " ".join(
        f"EXECUTE 'GRANT EXECUTE ON FUNCTION {fn} TO embedplat_worker';" for fn in _WORKER_FUNCTIONS
    )
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'embedplat_worker') "
        f"THEN {grants} END IF; END $$"
    )
    # The roles' privileges cover the new table and view (SELECT for every role).
    op.execute("SELECT embedplat.install_roles()")


def downgrade() -> None:
    op.execute("DROP VIEW embedplat.model_switches")
    for fn in (
        *_WORKER_FUNCTIONS,
        "embedplat.model_switch_cancel(text)",
        "embedplat.model_switch(text, text, boolean, integer)",
        "embedplat.switch_lock_collection(text, text)",
        "embedplat.switch_missing_chunks(integer, integer)",
        "embedplat.switch_enqueue_missing(integer, integer)",
        "embedplat.ann_index_is_valid(integer, integer)",
        "embedplat.retire_grace()",
    ):
        op.execute(f"DROP FUNCTION {fn}")
    op.drop_table("retired_models", schema=S)
    # A switch in progress is abandoned (reconcile deletes its vectors, as those of any model
    # the collection does not use).
    op.execute("UPDATE embedplat.collections SET backfill_model_id = NULL")

    # The views lose the column: dropped and made again (lease_holders reads pending_work).
    for view in ("lease_holders", "claimable_work", "pending_work"):
        op.execute(f"DROP VIEW {S}.{view}")
    op.execute("DELETE FROM embedplat.embedding_queue WHERE for_switch")
    op.drop_index("ix_embedding_queue_claimable", table_name="embedding_queue", schema=S)
    op.drop_constraint("pk_embedding_queue", "embedding_queue", schema=S, type_="primary")
    op.drop_column("embedding_queue", "for_switch", schema=S)
    op.create_primary_key("pk_embedding_queue", "embedding_queue", ["chunk_id"], schema=S)
    op.create_index(
        "ix_embedding_queue_claimable",
        "embedding_queue",
        ["collection_id", "available_at"],
        schema=S,
        postgresql_where=sa.text("state = 'pending'"),
    )
    _work_views()
    op.execute(view_sql("work.v2.sql", "embedplat.lease_holders"))
    op.execute(f"ALTER VIEW {S}.lease_holders SET (security_invoker = true)")
    op.execute("SELECT embedplat.install_roles()")

    op.drop_constraint("ck_collections_switch_consistent", "collections", schema=S, type_="check")
    op.drop_constraint(
        "fk_collections_kept_model_id_embedding_models", "collections", schema=S, type_="foreignkey"
    )
    for column in (
        "kept_model_id",
        "switch_reused",
        "switch_keep_old",
        "switch_started_at",
        "switch_model_name",
    ):
        op.drop_column("collections", column, schema=S)
