"""Concurrent ingests of the same ids in different orders take turns instead of deadlocking, a
collection drop waits for a running ingest, and ids repeated within one input are counted."""

from __future__ import annotations

import threading

import psycopg

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.store import FLUSH_ROWS
from tests.waiting import wait_for


def test_concurrent_ingests_in_opposite_orders_do_not_deadlock(platform: Platform) -> None:
    platform.create_collection("docs", model="test-hash-64")
    n = 2 * FLUSH_ROWS  # two upsert rounds per ingest: rows locked crosswise without the lock
    rows = [{"id": f"r{i:06d}", "text": f"text {i}"} for i in range(n)]
    platform.ingest("docs", rows)
    forward = [{**r, "text": r["text"] + " forward"} for r in rows]
    backward = [{**r, "text": r["text"] + " backward"} for r in reversed(rows)]
    errors: list[BaseException] = []
    results = []
    start = threading.Barrier(2)

    def ingest(batch: list[dict[str, str]]) -> None:
        try:
            start.wait()
            results.append(platform.ingest("docs", batch))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(b,)) for b in (forward, backward)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert sorted(r.updated for r in results) == [n, n]
    with platform.connection() as conn:
        kinds = conn.execute(
            "SELECT count(*) FILTER (WHERE content LIKE '%% forward'), "
            "count(*) FILTER (WHERE content LIKE '%% backward') FROM embedplat.records"
        ).fetchone()
    # one of the two ran last and won every row
    assert kinds is not None and sorted(kinds) == [0, n]


def test_duplicate_ids_in_one_input_are_counted(platform: Platform) -> None:
    result = platform.ingest(
        "docs",
        [
            {"id": "a", "text": "first a"},
            {"id": 1, "text": "number one"},
            {"id": "1", "text": "string one"},  # the same record as the number 1
            {"id": "a", "text": "second a"},
            {"id": "b", "text": "only b"},
        ],
    )
    assert result.inserted == 3 and result.duplicates == 2
    assert result.duplicate_ids == ["1", "a"]
    assert result.to_json()["duplicates"] == 2
    with platform.connection() as conn:
        rows = dict(conn.execute("SELECT external_id, content FROM embedplat.records").fetchall())
    assert rows == {"a": "second a", "1": "string one", "b": "only b"}  # the last one wins


def test_drop_waits_for_a_running_ingest(platform: Platform, db_url: str) -> None:
    platform.create_collection("docs", model="test-hash-64")
    halfway = threading.Event()
    go_on = threading.Event()

    def rows():
        for i in range(10):
            if i == 5:
                halfway.set()
                go_on.wait(120)
            yield {"id": f"r{i}", "text": f"text {i}"}

    outcome: list[object] = []

    def ingest() -> None:
        try:
            outcome.append(platform.ingest("docs", rows()))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    def drop() -> None:
        try:
            platform.drop_collection("docs")
            outcome.append("dropped")
        except BaseException as exc:
            outcome.append(exc)

    ingester = threading.Thread(target=ingest)
    ingester.start()
    assert halfway.wait(60)
    dropper = threading.Thread(target=drop)
    dropper.start()

    def drop_is_waiting() -> bool:
        with psycopg.connect(libpq_url(db_url)) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM embedplat.collections%%'"
            ).fetchone()
        return bool(row and row[0])

    wait_for(drop_is_waiting, 120, "the drop to wait for the ingest")
    go_on.set()
    ingester.join(120)
    dropper.join(120)
    # the ingest finished whole, then the drop went through: no foreign-key error
    assert [type(o).__name__ for o in outcome] == ["IngestResult", "str"], outcome
    assert platform.collections() == []
