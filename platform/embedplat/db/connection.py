"""Where the database is, and how to talk to it.

``resolve_database_url`` is the single place that decides between ``EMBEDPLAT_DATABASE_URL``
and the embedded server. ``check_database`` turns the usual failures (unreachable, bad login,
no pgvector) into one clear :class:`DatabaseUnavailableError`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import psycopg

from embedplat.config import Settings
from embedplat.errors import DatabaseUnavailableError

if TYPE_CHECKING:
    from sqlalchemy import Engine

MIN_SERVER_VERSION = 150000
MIN_PGVECTOR = (0, 8)


def resolve_database_url(settings: Settings, *, start_embedded: bool = True) -> str:
    """Return the configured URL, or start (or reuse) the embedded server and return its URL."""
    if settings.database_url:
        return settings.database_url
    from embedplat.db.embedded import EmbeddedServer

    server = EmbeddedServer(settings.home)
    if start_embedded:
        return server.start()
    url = server.url()
    if url is None:
        raise DatabaseUnavailableError(
            "the embedded database is not running; start it with `embedplat db start`"
        )
    return url


def libpq_url(url: str) -> str:
    """A URL psycopg/psql accept (strip SQLAlchemy's ``+driver`` suffix)."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)


def sqlalchemy_url(url: str) -> str:
    """The same URL with the psycopg 3 driver named, for SQLAlchemy."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql+psycopg://", url)


def redact(url: str) -> str:
    """The URL with any password replaced, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """Open a psycopg connection, translating connection failures into one clear error."""
    try:
        return psycopg.connect(libpq_url(url), autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise _explain(url, exc) from exc


def create_engine(url: str, *, pool_size: int = 5) -> Engine:
    """A SQLAlchemy engine on psycopg 3 with pre-ping, for the ORM side."""
    import sqlalchemy

    return sqlalchemy.create_engine(
        sqlalchemy_url(url), pool_size=pool_size, pool_pre_ping=True, future=True
    )


def check_database(url: str) -> str:
    """Verify the server is reachable, new enough and has pgvector; return pgvector's version."""
    with connect(url, autocommit=True) as conn:
        server_version = conn.info.server_version
        if server_version < MIN_SERVER_VERSION:
            raise DatabaseUnavailableError(
                f"{redact(url)} runs PostgreSQL {server_version // 10000}; embedplat needs 15 or newer"
            )
        row = conn.execute(
            "SELECT installed_version, default_version FROM pg_available_extensions "
            "WHERE name = 'vector'"
        ).fetchone()
        if row is None:
            raise DatabaseUnavailableError(
                f"pgvector is not installed on the server at {redact(url)}; install pgvector "
                f"{'.'.join(map(str, MIN_PGVECTOR))} or newer there (e.g. the postgresql-17-pgvector "
                "package), or unset EMBEDPLAT_DATABASE_URL to use the embedded database"
            )
        version = str(row[0] or row[1])
        if _version_tuple(version) < MIN_PGVECTOR:
            raise DatabaseUnavailableError(
                f"pgvector {version} on {redact(url)} is too old; embedplat needs "
                f"{'.'.join(map(str, MIN_PGVECTOR))} or newer (ALTER EXTENSION vector UPDATE)"
            )
        return version


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _explain(url: str, exc: psycopg.OperationalError) -> DatabaseUnavailableError:
    text = str(exc).strip()
    where = redact(url)
    if "password authentication failed" in text or "authentication failed" in text:
        return DatabaseUnavailableError(
            f"the database at {where} refused the login: check the user and password in "
            "EMBEDPLAT_DATABASE_URL"
        )
    if "does not exist" in text and "database" in text:
        return DatabaseUnavailableError(
            f"the database named in {where} does not exist: create it (createdb) or fix "
            "EMBEDPLAT_DATABASE_URL"
        )
    if "role" in text and "does not exist" in text:
        return DatabaseUnavailableError(
            f"the user named in {where} does not exist on that server: fix EMBEDPLAT_DATABASE_URL"
        )
    first_line = text.splitlines()[-1] if text else exc.__class__.__name__
    return DatabaseUnavailableError(
        f"cannot reach the database at {where} ({first_line}): is the server running and the "
        "URL right? Unset EMBEDPLAT_DATABASE_URL to use the embedded database"
    )
