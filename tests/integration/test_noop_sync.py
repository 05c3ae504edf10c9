"""A sync with nothing to do loads no model (seconds for a real one), yet still builds a
missing index of the active model."""

from __future__ import annotations

import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.indexes import ann_index_name, collection_index_names
from embedplat.sync import SyncOptions, sync

from .search_helpers import hash_sync, word_rows


def _no_model(name: str):
    pytest.fail(f"the sync loaded model {name!r} with nothing to embed")


def test_noop_sync_loads_no_model(platform: Platform, db_url: str) -> None:
    platform.create_collection("docs", model="test-hash-64")
    platform.ingest("docs", word_rows(10, seed=2, metadata=lambda i, rng: {}))
    assert hash_sync(db_url).chunks_embedded == 10
    connect = lambda: psycopg.connect(libpq_url(db_url))  # noqa: E731
    info = platform.collection("docs")
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        [name] = collection_index_names(conn, info.id)
        conn.execute(f'DROP INDEX embedplat."{name}"')
    report = sync(connect, _no_model, "docs", SyncOptions())
    assert report.chunks_embedded == 0 and report.records_chunked == 0
    assert report.indexes_built == [ann_index_name(info.id, 1)]  # rebuilt without the model
    # an empty collection that was never synced loads nothing either
    platform.create_collection("empty", model="test-hash-64")
    assert sync(connect, _no_model, "empty", SyncOptions()).indexes_built == []
