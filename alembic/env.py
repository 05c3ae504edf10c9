"""Alembic environment: targets embedplat's metadata, serialises concurrent upgrades."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool, text

from embedplat.db.connection import sqlalchemy_url
from embedplat.db.models import SCHEMA, Base

# Any fixed number: every `embedplat init` takes this lock, so two at once run one after the
# other and the second finds the schema at head.
MIGRATION_LOCK_KEY = 7_240_515_001

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("EMBEDPLAT_DATABASE_URL")
    if not url:
        raise RuntimeError("set EMBEDPLAT_DATABASE_URL (or run `embedplat init`)")
    return sqlalchemy_url(url)


def _include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # Only embedplat's own tables; the version table and other schemas are not ours to diff.
    return not (type_ == "table" and name == "alembic_version")


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "schema":
        return name == SCHEMA
    return True


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=Base.metadata,
        literal_binds=True,
        version_table_schema=SCHEMA,
        include_schemas=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        engine = create_engine(_url(), poolclass=pool.NullPool)
        with engine.connect() as connection:
            _run(connection)
        engine.dispose()
    else:
        _run(connectable)


def _run(connection: object) -> None:
    from sqlalchemy.engine import Connection

    assert isinstance(connection, Connection)
    with connection.begin():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            version_table_schema=SCHEMA,
            include_schemas=True,
            include_object=_include_object,
            include_name=_include_name,
            compare_type=True,
            compare_server_default=True,
        )
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
