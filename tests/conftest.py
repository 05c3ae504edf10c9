"""Test database fixtures.

PostgreSQL comes from, in order: ``EMBEDPLAT_TEST_DATABASE_URL``; testcontainers with
``pgvector/pgvector:pg17`` when a Docker daemon answers; else the embedded wheel in a throw-away
folder. One server per session; every test gets a fresh database cloned from a migrated
template (``CREATE DATABASE ... TEMPLATE``), which takes a few milliseconds.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from embedplat.config import Settings
from embedplat.db import migrate
from embedplat.db.connection import libpq_url, with_database

# Shared fixtures live in fixture modules, loaded here for every test (psycopg's tests/fix_*.py).
pytest_plugins = [
    "pytester",
    "tests.fix_embedders",
    "tests.fix_model",
    "tests.fix_cli",
    "tests.fix_workers",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
_counter = itertools.count()


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of the session's server (its maintenance database)."""
    env_url = os.environ.get("EMBEDPLAT_TEST_DATABASE_URL")
    if env_url:
        yield env_url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-untyped]

        with PostgresContainer("pgvector/pgvector:pg17", driver=None) as container:
            yield container.get_connection_url()
        return
    from embedplat.db.embedded import EmbeddedServer

    home = Path(tempfile.mkdtemp(prefix="embedplat-test-"))
    server = EmbeddedServer(home, durable=False)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    """Name of a database migrated to head, used as the template for every test database."""
    name = f"embedplat_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(pg_server), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                sql.Identifier(name)
            )
        )
    migrate.upgrade(with_database(pg_server, name))
    yield name
    with psycopg.connect(libpq_url(pg_server), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _fresh_database(pg_server: str, template: str) -> Iterator[str]:
    name = f"embedplat_t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(libpq_url(pg_server), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield with_database(pg_server, name)
    finally:
        with psycopg.connect(libpq_url(pg_server), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def db_url(pg_server: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    yield from _fresh_database(pg_server, template_db)


@pytest.fixture
def empty_db_url(pg_server: str) -> Iterator[str]:
    """A fresh database without the embedplat schema (for migration tests)."""
    yield from _fresh_database(pg_server, "template0")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings that never touch the user's real embedded server; new collections of the real
    model run on TEST_BACKEND (torch)."""
    from tests.fix_embedders import TEST_BACKEND  # a plugin module: imported by pytest first

    return Settings(database_url=None, home=tmp_path / "home", backend=TEST_BACKEND)


@pytest.fixture
def platform(db_url: str, settings: Settings) -> Iterator[object]:
    """A connected ``Platform`` on a fresh database."""
    from embedplat.api import Platform

    with Platform(db_url, settings) as p:
        yield p


@pytest.fixture
def shared_data() -> Path:
    """The shared measuring datasets; skips the test when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found next to the repository ({SHARED_DATA})")
    return SHARED_DATA
