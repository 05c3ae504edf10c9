"""Migration 0003: the change-notification triggers on embedplat.records."""

from __future__ import annotations

import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db import migrate
from embedplat.db.connection import libpq_url

CHANNEL = "embedplat_changes"


def _drain(conn: psycopg.Connection[tuple[object, ...]], wait: float = 0.3) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=wait)]


@pytest.fixture
def listening(db_url: str):  # type: ignore[no-untyped-def]
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        yield conn


def test_bulk_insert_notifies_once_per_collection(
    platform: Platform, listening: psycopg.Connection[tuple[object, ...]]
) -> None:
    a = platform.create_collection("a", model="test-hash-64")
    b = platform.create_collection("b", model="test-hash-64")
    _drain(listening)
    platform.ingest("a", [{"id": f"r{i}", "text": f"text {i}"} for i in range(500)])
    assert _drain(listening) == [str(a.id)]  # one statement, 500 rows: one notification
    with platform.connection() as conn:
        conn.execute(
            "INSERT INTO embedplat.records (collection_id, external_id, content) "
            "VALUES (%s, 'x', 'plain SQL writer'), (%s, 'y', 'another'), (%s, 'z', 'third')",
            (a.id, b.id, b.id),
        )
    assert sorted(_drain(listening)) == sorted([str(a.id), str(b.id)])


def test_only_content_changes_notify(
    platform: Platform, db_url: str, listening: psycopg.Connection[tuple[object, ...]]
) -> None:
    info = platform.create_collection("docs", model="test-hash-64")
    platform.ingest("docs", [{"id": "a", "text": "first"}, {"id": "b", "text": "second"}])
    _drain(listening)
    # Metadata only: the content hash is unchanged, so nothing to wake up for.
    platform.ingest("docs", [{"id": "a", "text": "first", "metadata": {"k": 1}}])
    assert _drain(listening) == []
    # The sync engine marking records chunked is an UPDATE too; it must stay silent.
    platform.sync("docs")
    assert _drain(listening) == []
    # A content change through the upsert (INSERT ... ON CONFLICT DO UPDATE) notifies.
    platform.ingest("docs", [{"id": "b", "text": "second, edited"}])
    assert _drain(listening) == [str(info.id)]
    # ... and so does a plain SQL UPDATE of the content.
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute("UPDATE embedplat.records SET content = 'new' WHERE external_id = 'a'")
        conn.execute("UPDATE embedplat.records SET metadata = '{\"x\": 2}'")
    assert _drain(listening) == [str(info.id)]


def test_rolled_back_writes_notify_nobody(
    platform: Platform, db_url: str, listening: psycopg.Connection[tuple[object, ...]]
) -> None:
    info = platform.create_collection("docs", model="test-hash-64")
    _drain(listening)
    with psycopg.connect(libpq_url(db_url)) as conn:
        conn.execute(
            "INSERT INTO embedplat.records (collection_id, external_id, content) "
            "VALUES (%s, 'x', 'never committed')",
            (info.id,),
        )
        conn.rollback()
    assert _drain(listening) == []


def test_downgrade_removes_the_triggers(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)

    def triggers() -> set[str]:
        with psycopg.connect(libpq_url(empty_db_url)) as conn:
            rows = conn.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'embedplat.records'::regclass "
                "AND NOT tgisinternal"
            ).fetchall()
        return {str(r[0]) for r in rows}

    assert triggers() == {"records_notify_insert", "records_notify_update"}
    migrate.downgrade(empty_db_url, "0002")
    assert triggers() == set()
    with psycopg.connect(libpq_url(empty_db_url)) as conn:
        gone = conn.execute("SELECT to_regproc('embedplat.notify_record_changes')").fetchone()
    assert gone == (None,)
    migrate.upgrade(empty_db_url)
    assert triggers() == {"records_notify_insert", "records_notify_update"}
