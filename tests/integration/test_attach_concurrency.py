"""Back-fill and sync while the app writes: app writers inserting, updating, deleting and
re-keying rows (in multi-row transactions too) during the back-fill and during syncs never
fail (nor does embedplat's side of their writes: no warning, no deadlock with a sync storing
vectors), and at the end the records equal the table exactly and every record is embedded."""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg

from embedplat.attach import backfill, drain, get_attachment
from embedplat.db.connection import libpq_url

from .search_helpers import hash_sync
from .test_attach import ARTICLES, _attach, _expected, _factory, _records

WRITERS = 3
ROWS = 1500
# App writes per writer: a bounded number, so a sync running meanwhile (which drains until
# nothing is stale) ends once the writers are done.
OPS = 300


def _writer(
    url: str,
    me: int,
    stop: threading.Event,
    ops: list[int],
    errors: list[str],
    deletes: bool,
) -> None:
    """Random app writes on the rows this writer owns (id % WRITERS == me), so writers never
    conflict with each other, only with embedplat. ``deletes``: deletes and key changes too."""
    rng = random.Random(me)
    mine = [i for i in range(1, ROWS + 1) if i % WRITERS == me]
    next_id = 1_000_000 * (me + 1)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: errors.append(f"notice: {d.message_primary}"))
        while not stop.is_set() and ops[me] < OPS:
            try:
                kind = rng.random()
                if kind < 0.25 or not mine:
                    next_id += WRITERS  # keeps next_id % WRITERS == me
                    conn.execute(
                        "INSERT INTO articles (id, title, body, author) VALUES (%s, %s, %s, %s)",
                        (next_id, f"new {next_id}", f"body {rng.random()}", "w"),
                    )
                    mine.append(next_id)
                elif kind < 0.45:
                    conn.execute(
                        "UPDATE articles SET body = %s WHERE id = %s",
                        (f"edited {rng.random()}", rng.choice(mine)),
                    )
                elif kind < 0.55:
                    conn.execute(
                        "UPDATE articles SET author = %s, views = views + 1 WHERE id = %s",
                        (f"a{rng.randrange(5)}", rng.choice(mine)),
                    )
                elif kind < 0.75 and not deletes:
                    conn.execute(
                        "UPDATE articles SET body = body || '.' WHERE id = %s", (rng.choice(mine),)
                    )
                elif kind < 0.65:
                    victim = mine.pop(rng.randrange(len(mine)))
                    conn.execute("DELETE FROM articles WHERE id = %s", (victim,))
                elif kind < 0.75:
                    old = mine.pop(rng.randrange(len(mine)))
                    next_id += WRITERS
                    conn.execute("UPDATE articles SET id = %s WHERE id = %s", (next_id, old))
                    mine.append(next_id)
                elif kind < 0.85:
                    # several rows in one statement: past a small inline_rows, their keys
                    # are queued and a drain derives them, racing the next writes
                    picks = rng.sample(mine, min(4, len(mine)))
                    conn.execute(
                        "UPDATE articles SET body = %s || id WHERE id = ANY (%s)",
                        (f"bulk {rng.random()} ", picks),
                    )
                else:
                    # several rows in one transaction, in random order: the order the
                    # back-fill locks them in is not the app's
                    picks = rng.sample(mine, min(4, len(mine)))
                    with conn.transaction():
                        for pick in picks:
                            conn.execute(
                                "UPDATE articles SET title = %s WHERE id = %s",
                                (f"t {rng.random()}", pick),
                            )
                ops[me] += 1
            except Exception as exc:  # an app write failed: the test fails on it
                errors.append(f"{type(exc).__name__}: {exc}")
                return


def _run_writers(url: str, deletes: bool, work: Any) -> tuple[Any, int]:
    """Start the writers, wait until each has written, run ``work()`` while they write, wait
    for them to finish; returns what ``work`` returned and how many app writes it overlapped."""
    stop = threading.Event()
    ops = [0] * WRITERS
    errors: list[str] = []
    threads = [
        threading.Thread(target=_writer, args=(url, me, stop, ops, errors, deletes))
        for me in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    try:
        while min(ops) < 20 and not errors and all(t.is_alive() for t in threads):
            threading.Event().wait(0.01)
        before = sum(ops)
        result = work()
        during = sum(ops) - before
        for thread in threads:
            thread.join(timeout=300)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []  # no app write failed, and embedplat sent no warning
    assert ops == [OPS] * WRITERS
    assert during > 0, "no app write happened while the work ran"
    return result, during


def _table(url: str) -> psycopg.Connection[Any]:
    app = psycopg.connect(libpq_url(url), autocommit=True)
    app.execute(ARTICLES)
    app.execute(
        "INSERT INTO articles (id, title, body, author) "
        "SELECT g, 'title ' || g, 'body ' || g, 'a' || (g %% 7) "
        "FROM generate_series(1, %s) g",
        (ROWS,),
    )
    return app


def _check_all_embedded(url: str, app: psycopg.Connection[Any]) -> None:
    assert _records(app) == _expected(app)
    info = get_attachment(app, "arts")
    assert info is not None and info.state == "ok" and info.healthy
    # once the last writes are synced, every record is chunked and embedded
    hash_sync(url, "arts")
    row: Any = app.execute(
        "SELECT (SELECT count(*) FROM embedplat.stale_records),"
        "       (SELECT count(*) FROM embedplat.pending_work),"
        "       (SELECT count(*) FROM embedplat.records r WHERE NOT EXISTS ("
        "            SELECT 1 FROM embedplat.embeddings e WHERE e.record_id = r.id))"
    ).fetchone()
    assert row == (0, 0, 0)


def test_writers_during_backfill_lose_nothing(db_url: str) -> None:
    with _table(db_url) as app:
        _attach(db_url, run_backfill=False)
        report, _ = _run_writers(
            db_url, True, lambda: backfill(_factory(db_url), "arts", batch_size=40)
        )
        assert report.done and report.batches > 20
        assert _records(app) == _expected(app)
        _check_all_embedded(db_url, app)


def test_writers_during_sync_lose_nothing(db_url: str) -> None:
    with _table(db_url) as app:
        _attach(db_url)
        syncs, _ = _run_writers(
            db_url, False, lambda: [hash_sync(db_url, "arts") for _ in range(3)]
        )
        assert all(s.chunks_failed == 0 for s in syncs)
        assert syncs[0].chunks_embedded >= ROWS
        _check_all_embedded(db_url, app)


def test_deletes_during_sync_lose_nothing(db_url: str) -> None:
    with _table(db_url) as app:
        _attach(db_url)
        syncs, _ = _run_writers(db_url, True, lambda: [hash_sync(db_url, "arts") for _ in range(3)])
        assert all(s.chunks_failed == 0 for s in syncs)
        _check_all_embedded(db_url, app)


def test_bulk_statements_queued_during_syncs_lose_nothing(db_url: str) -> None:
    # inline_rows 2: the writers' 4-row statements queue their keys while syncs drain them
    with _table(db_url) as app:
        _attach(db_url, inline_rows=2)
        syncs, _ = _run_writers(db_url, True, lambda: [hash_sync(db_url, "arts") for _ in range(3)])
        assert all(s.chunks_failed == 0 for s in syncs)
        assert sum(s.attached_rows_drained for s in syncs) > 0
        drain(_factory(db_url), "arts")  # what the last writes queued
        _check_all_embedded(db_url, app)
