"""Migrations: upgrade, downgrade, idempotence, concurrency, and ORM == migrations."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool

from embedplat.db import migrate
from embedplat.db.connection import libpq_url, sqlalchemy_url, with_database
from embedplat.db.models import SCHEMA, Base

TABLES = {"collections", "embedding_models", "records", "chunks", "embeddings", "embedding_queue"}


def _tables(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'embedplat'"
        ).fetchall()
    return {r[0] for r in rows} - {"alembic_version"}


def _functions(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'embedplat'"
        ).fetchall()
    return {r[0] for r in rows}


def test_upgrade_creates_schema_and_is_idempotent(empty_db_url: str) -> None:
    assert migrate.current_revision(empty_db_url) is None
    migrate.upgrade(empty_db_url)
    assert migrate.current_revision(empty_db_url) == migrate.head_revision()
    assert _tables(empty_db_url) >= TABLES
    migrate.upgrade(empty_db_url)  # second run: no error, same revision
    assert migrate.current_revision(empty_db_url) == migrate.head_revision()


def test_concurrent_upgrades_both_succeed(empty_db_url: str) -> None:
    # Separate processes, as two `embedplat init` would be (Alembic itself is not thread-safe).
    code = "import sys; from embedplat.db import migrate; migrate.upgrade(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, empty_db_url], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    assert migrate.current_revision(empty_db_url) == migrate.head_revision()
    assert _tables(empty_db_url) >= TABLES


def test_downgrade_to_base_removes_everything_and_upgrade_again(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    migrate.downgrade(empty_db_url, "base")
    assert _tables(empty_db_url) == set()
    assert _functions(empty_db_url) == set()
    assert migrate.current_revision(empty_db_url) is None
    migrate.upgrade(empty_db_url)
    assert _tables(empty_db_url) >= TABLES


# The schema as the catalogs describe it: every object embedplat's migrations create or drop,
# with its definition, so two snapshots are equal only if the schemas are. Alembic's own
# version table (which stays, empty, at base) is left out: its content is compared instead.
_ALEMBIC = ["alembic_version", "alembic_version_pkc"]
_SCHEMA_QUERIES = {
    "columns": """
        SELECT c.relname, c.relkind::text, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attgenerated::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
        WHERE n.nspname = %(schema)s AND c.relname <> ALL(%(alembic)s)""",
    "relations": """
        SELECT c.relname, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND c.relname <> ALL(%(alembic)s)""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes
        WHERE schemaname = %(schema)s AND tablename <> ALL(%(alembic)s)""",
    "constraints": """
        SELECT rel.relname, con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
        LEFT JOIN pg_class rel ON rel.oid = con.conrelid
        WHERE n.nspname = %(schema)s AND coalesce(rel.relname, '') <> ALL(%(alembic)s)""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid),
               CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(p.oid) END
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = %(schema)s""",
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND c.relkind IN ('v', 'm')""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND NOT t.tgisinternal""",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check
        FROM pg_policies WHERE schemaname = %(schema)s""",
    "types": """
        SELECT t.typname, t.typtype::text,
               coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                         FROM pg_enum e WHERE e.enumtypid = t.oid), '')
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = %(schema)s AND t.typtype IN ('e', 'd', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)""",
    # Extensions are the database's: the first downgrade keeps `vector` for other schemas.
    "extensions": "SELECT extname FROM pg_extension WHERE extname <> 'vector'",
}


def _schema(url: str) -> dict[str, list[tuple[object, ...]]]:
    """A comparable snapshot of the embedplat schema (and the database's extensions)."""
    with psycopg.connect(libpq_url(url)) as conn:
        return {
            kind: sorted(
                conn.execute(query, {"schema": SCHEMA, "alembic": _ALEMBIC}).fetchall(),
                key=repr,
            )
            for kind, query in _SCHEMA_QUERIES.items()
        }


def _schema_diff(
    got: dict[str, list[tuple[object, ...]]], want: dict[str, list[tuple[object, ...]]]
) -> dict[str, dict[str, list[tuple[object, ...]]]]:
    return {
        kind: {
            "extra": [r for r in got[kind] if r not in want[kind]],
            "missing": [r for r in want[kind] if r not in got[kind]],
        }
        for kind in want
        if got[kind] != want[kind]
    }


def test_each_revision_downgrades_one_step_to_exactly_the_schema_before_it(
    empty_db_url: str,
) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config(empty_db_url))
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    # On the way up, one revision at a time, record the schema each revision leaves behind.
    schemas = {"base": _schema(empty_db_url)}
    for revision in revisions:
        migrate.upgrade(empty_db_url, revision)
        schemas[revision] = _schema(empty_db_url)
    assert schemas["base"]["relations"] == [] and schemas[revisions[-1]]["relations"]
    assert schemas[revisions[-1]]["functions"] and schemas[revisions[-1]]["views"]
    # Every revision changes the schema, so a downgrade that does nothing cannot pass below.
    for before, revision in zip(["base", *revisions], revisions, strict=False):
        assert schemas[revision] != schemas[before], f"{revision} left the schema as it was"

    # On the way down, each downgrade must restore exactly that schema (a downgrade that
    # leaves an object behind, or drops one it did not create, fails here), and upgrading
    # again from there must give the same schema as the first time.
    for index in range(len(revisions) - 1, -1, -1):
        target = revisions[index - 1] if index > 0 else "base"
        migrate.downgrade(empty_db_url, target)
        assert migrate.current_revision(empty_db_url) == (None if target == "base" else target)
        diff = _schema_diff(_schema(empty_db_url), schemas[target])
        assert diff == {}, f"downgrade of {revisions[index]} to {target}: {diff}"
        migrate.upgrade(empty_db_url, revisions[index])
        diff = _schema_diff(_schema(empty_db_url), schemas[revisions[index]])
        assert diff == {}, f"upgrade to {revisions[index]} after its downgrade: {diff}"
        migrate.downgrade(empty_db_url, target)


def test_orm_models_match_migrations(db_url: str) -> None:
    engine = create_engine(sqlalchemy_url(db_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    "include_name": lambda name, type_, parents: (
                        name == SCHEMA if type_ == "schema" else True
                    ),
                    "include_object": lambda obj, name, type_, reflected, compare_to: (
                        not (type_ == "table" and name == "alembic_version")
                    ),
                    "compare_type": True,
                    "compare_server_default": True,
                },
            )
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"ORM models and migrations differ: {diff}"


def test_content_hash_is_computed_by_the_database(db_url: str) -> None:
    import hashlib

    with psycopg.connect(libpq_url(db_url)) as conn:
        cid = conn.execute(
            "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap) "
            "VALUES ('c', 'm', 100, 10) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        text = "héllo wörld ✓"
        row = conn.execute(
            "INSERT INTO embedplat.records (collection_id, external_id, content) "
            "VALUES (%s, 'a', %s) RETURNING content_hash",
            (cid, text),
        ).fetchone()
    assert row is not None
    assert bytes(row[0]) == hashlib.sha256(text.encode()).digest()


def test_non_utf8_database_is_refused(pg_server: str) -> None:
    from embedplat.errors import DatabaseUnavailableError

    name = "embedplat_latin1_check"
    with psycopg.connect(libpq_url(pg_server), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(
            f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        )
    try:
        url = with_database(pg_server, name)
        with pytest.raises(DatabaseUnavailableError, match="UTF8"):
            migrate.upgrade(url)
    finally:
        with psycopg.connect(libpq_url(pg_server), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
