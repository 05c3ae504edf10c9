"""Schema management through Alembic, usable without an alembic.ini or a checkout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from embedplat.db.connection import connect, sqlalchemy_url
from embedplat.db.sqlfiles import resource_dir
from embedplat.errors import DatabaseUnavailableError

if TYPE_CHECKING:  # alembic is imported when a migration runs, not by every command
    from alembic.config import Config


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the migrations shipped in the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resource_dir("embedplat.migrations")))
    # '%' is ConfigParser's interpolation character; a password may contain it.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the schema to ``revision``: idempotent, and safe to run concurrently."""
    from alembic import command

    _require_utf8(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Downgrade the schema to ``revision`` (``base`` removes everything embedplat created)."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None before `embedplat init`."""
    with connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('embedplat.alembic_version')").fetchone()
        if exists is None or exists[0] is None:
            return None
        row = conn.execute("SELECT version_num FROM embedplat.alembic_version").fetchone()
        return None if row is None else str(row[0])


def head_revision() -> str:
    """The newest revision shipped with this version of embedplat."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
    assert head is not None
    return head


def _require_utf8(url: str) -> None:
    with connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW server_encoding").fetchone()
    encoding = str(row[0]) if row else "?"
    if encoding.upper() not in ("UTF8", "UTF-8"):
        raise DatabaseUnavailableError(
            f"embedplat needs a UTF8 database, this one is {encoding}: "
            "create it with `createdb -E UTF8 -T template0 NAME`"
        )
