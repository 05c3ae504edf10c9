"""An app's own Alembic migrations attach its table with ``op.embedplat_attach`` (a tiny env in
a temp folder with its own version table): upgrade creates and attaches ``articles``,
downgrade detaches it (dropping the records and the triggers) and drops the table."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from alembic.operations import Operations

from embedplat.alembic_ops import AttachTableOp, DetachTableOp
from embedplat.db.connection import libpq_url, sqlalchemy_url

ENV = """
from alembic import context
from sqlalchemy import create_engine, pool

import embedplat.alembic_ops  # noqa: F401  (registers op.embedplat_attach / op.embedplat_detach)

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None,
                      version_table="app_alembic_version")
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""

FIRST = '''
"""articles, attached to embedplat collection 'articles'"""
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None


def upgrade():
    op.create_table(
        "articles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("author", sa.Text),
    )
    op.execute("INSERT INTO articles VALUES (1, 'Seeded', 'A row from before the attach.', 'ann')")
    op.embedplat_attach(
        "articles", "public.articles", text_columns=["title", "body"],
        metadata_columns=["author"], model="test-hash-64",
    )


def downgrade():
    op.embedplat_detach("articles", drop_records=True)
    op.drop_table("articles")
'''

SECOND = '''
"""a second collection on the body alone"""
from alembic import op

revision = "a2"
down_revision = "a1"


def upgrade():
    op.embedplat_attach("bodies", "articles", text_columns=["body"], model="test-hash-64")


def downgrade():
    op.embedplat_detach("bodies", drop_records=True)
'''


def _config(tmp_path: Path, url: str) -> Config:
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(ENV)
    (tmp_path / "script.py.mako").write_text("")
    (tmp_path / "versions" / "a1_articles.py").write_text(FIRST)
    (tmp_path / "versions" / "a2_bodies.py").write_text(SECOND)
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def _state(url: str) -> dict[str, object]:
    with psycopg.connect(libpq_url(url)) as conn:
        table = conn.execute("SELECT to_regclass('public.articles') IS NOT NULL").fetchone()
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relname = 'articles' AND NOT t.tgisinternal"
        ).fetchone()
        records = conn.execute(
            "SELECT c.name, r.external_id, r.content FROM embedplat.records r "
            "JOIN embedplat.collections c ON c.id = r.collection_id ORDER BY 1, 2"
        ).fetchall()
        attached = conn.execute(
            "SELECT collection, state FROM embedplat.attachment_status ORDER BY 1"
        ).fetchall()
        version = conn.execute("SELECT max(version_num) FROM app_alembic_version").fetchone()
    assert table is not None and triggers is not None
    return {
        "table": table[0],
        "triggers": triggers[0],
        "records": records,
        "attached": attached,
        "version": version[0] if version else None,
    }


def test_app_migration_attaches_and_downgrade_detaches(tmp_path: Path, db_url: str) -> None:
    config = _config(tmp_path, db_url)
    command.upgrade(config, "a1")
    state = _state(db_url)
    assert state["table"] and state["triggers"] == 4 and state["version"] == "a1"
    # the row seeded before the attach was back-filled inside the migration
    assert state["records"] == [("articles", "1", "Seeded\n\nA row from before the attach.")]
    assert state["attached"] == [("articles", "ok")]
    with psycopg.connect(libpq_url(db_url), autocommit=True) as app:
        app.execute("INSERT INTO articles VALUES (2, 'Later', 'Written by the app.', 'bob')")
    command.upgrade(config, "head")
    state = _state(db_url)
    assert state["triggers"] == 8
    assert [r[:2] for r in state["records"]] == [
        ("articles", "1"),
        ("articles", "2"),
        ("bodies", "1"),
        ("bodies", "2"),
    ]
    command.downgrade(config, "a1")
    state = _state(db_url)
    assert state["triggers"] == 4 and state["attached"] == [("articles", "ok")]
    assert {r[0] for r in state["records"]} == {"articles"}
    command.downgrade(config, "base")
    state = _state(db_url)
    assert not state["table"] and state["records"] == [] and state["attached"] == []
    # and up again from nothing
    command.upgrade(config, "head")
    assert len(_state(db_url)["records"]) == 2  # the seeded row, in both collections


def test_operations_reverse_each_other() -> None:
    attach = AttachTableOp("articles", "public.articles", text_columns="body")
    assert attach.text_columns == ["body"]
    detach = attach.reverse()
    assert isinstance(detach, DetachTableOp) and detach.drop_records
    assert detach.reverse() is attach
    with pytest.raises(ValueError, match="cannot be reversed"):
        DetachTableOp("articles").reverse()
    # registered on Alembic's op
    assert hasattr(Operations, "embedplat_attach") and hasattr(Operations, "embedplat_detach")
