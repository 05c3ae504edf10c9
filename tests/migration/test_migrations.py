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
from embedplat.db.connection import libpq_url, sqlalchemy_url
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


def test_each_revision_downgrades_one_step(empty_db_url: str) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config(empty_db_url))
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    migrate.upgrade(empty_db_url)
    for index in range(len(revisions) - 1, -1, -1):
        target = revisions[index - 1] if index > 0 else "base"
        migrate.downgrade(empty_db_url, target)
        assert migrate.current_revision(empty_db_url) == (None if target == "base" else target)
        migrate.upgrade(empty_db_url, revisions[index])
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
        url = libpq_url(pg_server).rsplit("/", 1)[0] + f"/{name}"
        with pytest.raises(DatabaseUnavailableError, match="UTF8"):
            migrate.upgrade(url)
    finally:
        with psycopg.connect(libpq_url(pg_server), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
