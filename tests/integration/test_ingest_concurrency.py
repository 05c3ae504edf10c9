"""Concurrent ingests of the same ids in different orders take turns instead of deadlocking,
and ids repeated within one input are counted and reported."""

from __future__ import annotations

import threading

from embedplat.api import Platform
from embedplat.store import FLUSH_ROWS


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
