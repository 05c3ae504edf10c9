"""Dropping a collection never harms another: exact index names, and no lock that stalls the
readers of other collections."""

from __future__ import annotations

import threading

import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.indexes import ann_index_name, is_collection_index

from .search_helpers import hash_sync, word_rows


def _ann_indexes(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes "
            "WHERE schemaname = 'embedplat' AND indexname LIKE 'ix\\_embeddings\\_ann\\_%'"
        ).fetchall()
    return {r[0] for r in rows}


def _make(platform: Platform, url: str, name: str) -> int:
    info = platform.create_collection(name, model="test-hash-64")
    platform.ingest(name, word_rows(20, seed=info.id, metadata=lambda i, rng: {}))
    hash_sync(url, name)
    return info.id


def test_index_names_match_exactly() -> None:
    assert is_collection_index("ix_embeddings_ann_c1_m1", 1)
    assert is_collection_index("ix_embeddings_ann_c1_m12_new", 1)
    assert not is_collection_index("ix_embeddings_ann_c10_m1", 1)
    assert not is_collection_index("ix_embeddings_ann_c1_m1x", 1)
    assert not is_collection_index("ix_embeddings_ann_c1_", 1)


def test_drop_leaves_other_collections_indexes(platform: Platform, db_url: str) -> None:
    ids = {f"col{i}": _make(platform, db_url, f"col{i}") for i in range(1, 13)}
    assert ids["col1"] == 1 and ids["col12"] == 12  # ids 10-12 start with "1"
    before = _ann_indexes(db_url)
    assert len(before) == 12

    platform.drop_collection("col1")

    model = 1  # every collection uses the same test model
    assert _ann_indexes(db_url) == before - {ann_index_name(1, model)}
    # the collections whose ids start with 1 still search through their own index
    for name in ("col10", "col11", "col12"):
        assert ann_index_name(ids[name], model) in _ann_indexes(db_url)


def test_drop_does_not_block_readers_of_other_collections(platform: Platform, db_url: str) -> None:
    _make(platform, db_url, "victim")
    _make(platform, db_url, "bystander")
    url = libpq_url(db_url)
    with psycopg.connect(url) as reader, psycopg.connect(url, autocommit=True) as observer:
        # An open transaction that has read the shared embeddings table: a drop must wait for
        # it (CONCURRENTLY does), but must not make *new* readers wait behind it.
        reader.execute(
            "SELECT count(*) FROM embedplat.embeddings e "
            "JOIN embedplat.collections c ON c.id = e.collection_id WHERE c.name = 'bystander'"
        ).fetchone()
        errors: list[BaseException] = []

        def drop() -> None:
            try:
                platform.drop_collection("victim")
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        dropper = threading.Thread(target=drop)
        dropper.start()
        try:
            # wait (event-driven) until the drop is blocked behind the open reader
            with observer.cursor() as cur:
                for _ in range(600):
                    waiting = cur.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query ILIKE 'DROP INDEX%%'"
                    ).fetchone()
                    if waiting and waiting[0]:
                        break
                    observer.execute("SELECT pg_sleep(0.05)")
                else:
                    pytest.fail("the drop never reached its index step")
            # a new reader of another collection gets through at once
            with psycopg.connect(url) as fresh:
                fresh.execute("SET lock_timeout = '2s'")
                row = fresh.execute(
                    "SELECT count(*) FROM embedplat.search('bystander', "
                    "(SELECT embedding FROM embedplat.embeddings e JOIN embedplat.collections c "
                    " ON c.id = e.collection_id WHERE c.name = 'bystander' LIMIT 1), 5)"
                ).fetchone()
                assert row is not None and row[0] == 5
        finally:
            reader.rollback()
            dropper.join(timeout=120)
        assert not errors, errors
    assert not any(is_collection_index(n, 1) for n in _ann_indexes(db_url))
    with platform.connection() as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM embedplat.collections")]
    assert names == ["bystander"]
