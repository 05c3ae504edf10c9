"""Least privilege: group roles embedplat_reader / embedplat_writer / embedplat_worker,
per-collection grants (embedplat.collection_grants) enforced by row-level security on every
table holding a collection's data, and views checked with the caller's rights.

- collection_grants: (collection, role, can_write); a role reads the collections granted to it
  or to a role it inherits from, and writes records of those granted with write.
- roles.v1.sql: granted_collections / is_worker (what the policies call; inlined, so a policy is
  a hashed subquery, not a function call per row) and install_roles (creates the roles where
  missing and grants their privileges; without CREATEROLE it warns and skips, see
  docs/security.md).
- RLS on collections, records, chunks, embeddings, embedding_queue, attachments and
  collection_grants (enabled, not forced: the tables' owner keeps full access).
- security_invoker = true on every view of the schema (PostgreSQL >= 15): a view is otherwise
  read with its owner's rights, which would bypass RLS.

Every function of the schema is SECURITY INVOKER except the attach trigger's two (0009), which
write the attached collection only and read nothing back to their caller.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from embedplat.db.sqlfiles import read_sql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "embedplat"
ROLES = ("embedplat_reader", "embedplat_writer", "embedplat_worker")

# Table -> its collection id column: every table holding a collection's data.
COLLECTION_TABLES = {
    "collections": "id",
    "records": "collection_id",
    "chunks": "collection_id",
    "embeddings": "collection_id",
    "embedding_queue": "collection_id",
    "attachments": "collection_id",
}

# In FROM, so the planner inlines the function: one uncorrelated subquery per statement, probed
# as a hashed set per row. The worker test is a scalar subquery for the same reason (an
# InitPlan, evaluated once, instead of a function call per row).
_READABLE = "{column} IN (SELECT g.id FROM embedplat.granted_collections(false) AS g(id))"
_WRITABLE = "{column} IN (SELECT g.id FROM embedplat.granted_collections(true) AS g(id))"
_WORKER = "(SELECT embedplat.is_worker())"


def upgrade() -> None:
    op.create_table(
        "collection_grants",
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("role", postgresql.OID(), nullable=False),
        sa.Column("can_write", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "granted_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            [f"{S}.collections.id"],
            name="fk_collection_grants_collection_id_collections",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("collection_id", "role", name="pk_collection_grants"),
        schema=S,
    )
    op.execute(read_sql("roles.v1.sql"))

    for table, column in COLLECTION_TABLES.items():
        op.execute(f"ALTER TABLE {S}.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_read ON {S}.{table} FOR SELECT "
            f"USING ({_READABLE.format(column=column)})"
        )
        op.execute(
            f"CREATE POLICY {table}_worker ON {S}.{table} FOR ALL "
            f"USING ({_WORKER}) WITH CHECK ({_WORKER})"
        )
    op.execute(
        f"CREATE POLICY records_write ON {S}.records FOR ALL "
        f"USING ({_WRITABLE.format(column='collection_id')}) "
        f"WITH CHECK ({_WRITABLE.format(column='collection_id')})"
    )
    # FOR KEY SHARE (ingest holding its collection) checks UPDATE policies' USING; the row
    # itself can never be changed by a writer.
    op.execute(
        f"CREATE POLICY collections_lock ON {S}.collections FOR UPDATE "
        f"USING ({_WRITABLE.format(column='id')}) WITH CHECK (false)"
    )
    # A role sees its own grants (and those of the roles it inherits from), nobody else's.
    op.execute(f"ALTER TABLE {S}.collection_grants ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY collection_grants_own ON {S}.collection_grants FOR SELECT "
        "USING (pg_has_role(role, 'USAGE'))"
    )

    _set_views_security_invoker(True)
    op.execute("SELECT embedplat.install_roles()")


def downgrade() -> None:
    # The roles are cluster-wide and may serve other databases: they stay, without any
    # privilege on this schema.
    op.execute(
        "DO $$ DECLARE r text; BEGIN "
        "FOR r IN SELECT rolname FROM pg_roles WHERE rolname = ANY ("
        + "ARRAY["
        + ", ".join(f"'{role}'" for role in ROLES)
        + "]) LOOP "
        "EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA embedplat FROM %I', r); "
        "EXECUTE format('REVOKE ALL ON SCHEMA embedplat FROM %I', r); "
        "END LOOP; END $$"
    )
    _set_views_security_invoker(False)
    op.execute(f"DROP POLICY collection_grants_own ON {S}.collection_grants")
    op.execute(f"DROP POLICY collections_lock ON {S}.collections")
    op.execute(f"DROP POLICY records_write ON {S}.records")
    for table in COLLECTION_TABLES:
        op.execute(f"DROP POLICY {table}_worker ON {S}.{table}")
        op.execute(f"DROP POLICY {table}_read ON {S}.{table}")
        op.execute(f"ALTER TABLE {S}.{table} DISABLE ROW LEVEL SECURITY")
    op.execute("DROP FUNCTION embedplat.install_roles()")
    op.execute("DROP FUNCTION embedplat.is_worker()")
    op.execute("DROP FUNCTION embedplat.granted_collections(boolean)")
    op.drop_table("collection_grants", schema=S)


def _set_views_security_invoker(on: bool) -> None:
    """security_invoker on every view of the schema (reset: the default, the owner's rights)."""
    action = "SET (security_invoker = true)" if on else "RESET (security_invoker)"
    op.execute(
        "DO $$ DECLARE v record; BEGIN "
        "FOR v IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'embedplat' AND c.relkind = 'v' LOOP "
        f"EXECUTE format('ALTER VIEW embedplat.%I {action}', v.relname); "
        "END LOOP; END $$"
    )
