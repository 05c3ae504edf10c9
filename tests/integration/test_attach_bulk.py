"""Bulk statements on an attached table (sql/attach.v2.sql): past the attachment's
``inline_rows`` an INSERT or UPDATE queues its rows' keys instead of writing records, a sync
(or embedplat.attach_drain) derives them, deletes stay synchronous at any size, and a first
back-fill has no prune pass."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from embedplat.attach import (
    DEFAULT_INLINE_ROWS,
    attach_table,
    drain,
    get_attachment,
    reconcile_attachment,
)
from embedplat.errors import InvalidInputError
from embedplat.status import collection_status

from .search_helpers import hash_sync
from .test_attach import ARTICLES, _conn, _expected, _factory, _records

INLINE = 3  # inline_rows of the attachments here: statements of 4 rows and more are bulk


@pytest.fixture
def app(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection with an empty ``articles`` table attached to ``arts``."""
    with _conn(db_url, autocommit=True) as conn:
        conn.execute(ARTICLES)
        attach_table(
            _factory(db_url),
            "arts",
            "public.articles",
            text_columns=["title", "body"],
            metadata_columns=["author"],
            filter_column="published",
            model="test-hash-64",
            inline_rows=INLINE,
        )
        yield conn


def _insert(conn: psycopg.Connection[Any], first: int, count: int) -> None:
    conn.execute(
        "INSERT INTO articles (id, title, body, author) "
        "SELECT g, 'title ' || g, 'body ' || g, 'a' || (g %% 3) "
        "FROM generate_series(%s::int, %s::int) g",
        (first, first + count - 1),
    )


def _queue(conn: psycopg.Connection[Any]) -> list[list[str]]:
    return [
        r[0] for r in conn.execute("SELECT external_ids FROM embedplat.attach_pending ORDER BY id")
    ]


def test_sql_default_inline_rows_is_the_python_one(db_url: str) -> None:
    with _conn(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
        conn.execute("SELECT embedplat.attach('t', 't'::regclass, text_columns => ARRAY['body'])")
        row = conn.execute("SELECT inline_rows FROM embedplat.attachments").fetchone()
    assert row == (DEFAULT_INLINE_ROWS,)


def test_up_to_inline_rows_is_written_in_the_statement_past_it_queued(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _insert(app, 1, INLINE)  # exactly inline_rows: records in the writer's transaction
    assert set(_records(app)) == {"1", "2", "3"} and _queue(app) == []
    with app.transaction():
        _insert(app, 10, 2500)  # bulk: keys queued in 1,000s, no record written
        assert set(_records(app)) == {"1", "2", "3"}
    queued = _queue(app)
    assert sorted(len(q) for q in queued) == [500, 1000, 1000]
    assert sorted(int(k) for q in queued for k in q) == list(range(10, 2510))
    attachment = get_attachment(app, "arts")
    assert attachment is not None and attachment.pending_rows == 2500
    assert attachment.inline_rows == INLINE
    (status,) = collection_status(app)
    assert status.pending_rows == 2500 and status.stale >= 2500 and status.lag_seconds is not None

    report = drain(_factory(db_url), "arts", batch_size=1000)
    assert (report.rows_read, report.records_inserted, report.done) == (2500, 2500, True)
    assert report.batches == 3
    assert _queue(app) == []
    assert _records(app) == _expected(app)
    assert get_attachment(app, "arts").pending_rows == 0  # type: ignore[union-attr]
    # a drain with nothing queued does nothing
    again = drain(_factory(db_url), "arts")
    assert (again.rows_read, again.records_inserted, again.batches) == (0, 0, 1)


def test_a_rolled_back_bulk_statement_queues_nothing(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    with pytest.raises(RuntimeError), app.transaction():
        _insert(app, 1, 10)
        raise RuntimeError("roll back")
    assert _queue(app) == [] and _records(app) == {}


def test_bulk_update_queues_text_changes_but_deletes_at_once(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _insert(app, 1, 10)
    drain(_factory(db_url), "arts")
    before = _records(app)
    # 10 rows: 6 get new text (queued), 4 leave the collection (deleted in the statement)
    app.execute(
        "UPDATE articles SET body = CASE WHEN id <= 6 THEN 'new body ' || id ELSE body END, "
        "published = id <= 6"
    )
    records = _records(app)
    assert set(records) == {str(i) for i in range(1, 7)}
    assert all(records[k] == before[k] for k in records)  # text not yet re-derived
    assert sorted(int(k) for q in _queue(app) for k in q) == [1, 2, 3, 4, 5, 6]
    # a bulk key change: the old keys' records go in the statement, the new keys are queued
    app.execute("UPDATE articles SET id = id + 100 WHERE id <= 6")
    assert _records(app) == {}
    drain(_factory(db_url), "arts")
    assert _records(app) == _expected(app, "published")
    assert set(_records(app)) == {str(i) for i in range(101, 107)}


def test_bulk_delete_and_truncate_are_synchronous_and_clear_the_queue(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _insert(app, 1, 20)
    drain(_factory(db_url), "arts")
    hash_sync(db_url, "arts")
    app.execute("DELETE FROM articles WHERE id <= 10")  # bulk: still deleted at once
    assert set(_records(app)) == {str(i) for i in range(11, 21)}
    assert app.execute(
        "SELECT count(*) FROM embedplat.chunks ch JOIN embedplat.records r ON r.id = ch.record_id "
        "WHERE r.external_id::int <= 10"
    ).fetchone() == (0,)
    _insert(app, 100, 50)  # queued ...
    assert _queue(app) != []
    app.execute("TRUNCATE articles")  # ... and gone with the table's rows
    assert _queue(app) == [] and _records(app) == {}


def test_keys_drain_to_the_rows_state_at_drain_time_in_any_order(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _insert(app, 1, 10)  # queued
    app.execute("DELETE FROM articles WHERE id = 1")  # deleted before any drain
    app.execute("UPDATE articles SET body = 'edited inline' WHERE id = 2")  # one row: inline
    assert set(_records(app)) == {"2"}
    app.execute("UPDATE articles SET published = false WHERE id = 3")
    _insert(app, 1, 1)  # re-inserted inline, before the queued key of its first life drains
    drain(_factory(db_url), "arts")
    assert _records(app) == _expected(app, "published")
    assert "3" not in _records(app) and _records(app)["2"][0].endswith("edited inline")


def test_sync_drains_first_and_embeds_what_it_derived(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    with _conn(db_url, autocommit=True) as listener:
        listener.execute("LISTEN embedplat_changes")
        _insert(app, 1, 40)
        woke = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
    cid = app.execute("SELECT id FROM embedplat.collections WHERE name = 'arts'").fetchone()
    assert cid is not None and woke == [str(cid[0])]  # a bulk statement wakes the workers
    report = hash_sync(db_url, "arts")
    assert report.attached_rows_drained == 40
    assert report.records_chunked == 40 and report.chunks_embedded >= 40
    assert _queue(app) == [] and _records(app) == _expected(app)
    (status,) = collection_status(app)
    assert status.stale == 0 and status.embedded >= 40
    # nothing queued: the next sync drains nothing
    assert hash_sync(db_url, "arts").attached_rows_drained == 0


def test_drain_waits_for_a_writer_in_flight_and_reads_its_newer_row(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _insert(app, 1, 10)
    result: dict[str, Any] = {}
    with _conn(db_url) as writer:
        writer.execute("UPDATE articles SET body = 'written meanwhile' WHERE id = 5")

        def run() -> None:
            result["report"] = drain(_factory(db_url), "arts")

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.5)  # the drain's batch times out on the row lock and retries
        writer.commit()
        thread.join(30)
    assert not thread.is_alive()
    assert result["report"].retries >= 1 and result["report"].done
    assert _records(app) == _expected(app)
    assert _records(app)["5"][0].endswith("written meanwhile")


def test_composite_keys_drain(db_url: str) -> None:
    with _conn(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tickets (org text, n int, body text, PRIMARY KEY (org, n))")
        attach_table(
            _factory(db_url),
            "t",
            "tickets",
            text_columns=["body"],
            model="test-hash-64",
            inline_rows=0,
        )
        conn.execute(
            "INSERT INTO tickets SELECT o, n, o || ' ' || n FROM unnest(ARRAY['acme', 'a\"b']) o, "
            "generate_series(1, 3) n"
        )
        assert _records(conn, "t") == {}
        report = drain(_factory(db_url), "t")
        assert report.records_inserted == 6
        got = {k: v[0] for k, v in _records(conn, "t").items()}
        assert got['["acme", "2"]'] == "acme 2" and got['["a\\"b", "3"]'] == 'a"b 3'
        conn.execute("DELETE FROM tickets WHERE n = 1")
        assert len(_records(conn, "t")) == 4


def test_inline_rows_is_checked_and_kept_by_a_refresh(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    with pytest.raises(InvalidInputError, match="inline_rows"):
        attach_table(_factory(db_url), "x", "articles", text_columns=["body"], inline_rows=-1)
    refused = pytest.raises(psycopg.errors.InvalidParameterValue, match="must be 0 or more")
    with refused, app.transaction():
        app.execute(
            "SELECT embedplat.attach('x', 'articles'::regclass, text_columns => ARRAY['body'], "
            "inline_rows => -5)"
        )
    attach_table(_factory(db_url), "arts", "articles", text_columns=None, refresh=True)
    assert get_attachment(app, "arts").inline_rows == INLINE  # type: ignore[union-attr]
    attach_table(
        _factory(db_url), "arts", "articles", text_columns=None, refresh=True, inline_rows=50
    )
    assert get_attachment(app, "arts").inline_rows == 50  # type: ignore[union-attr]
    _insert(app, 1, 50)  # now inline
    assert len(_records(app)) == 50 and _queue(app) == []


def test_first_backfill_skips_the_prune_pass_a_reconcile_does_not(db_url: str) -> None:
    with _conn(db_url, autocommit=True) as conn:
        conn.execute(ARTICLES)
        _insert(conn, 1, 30)
        report = attach_table(
            _factory(db_url),
            "arts",
            "articles",
            text_columns=["title", "body"],
            model="test-hash-64",
            batch_size=7,
        )
        assert report.rows_read == 30 and report.records_inserted == 30
        assert report.records_checked == 0 and report.done  # no prune pass
        assert get_attachment(conn, "arts").state == "ok"  # type: ignore[union-attr]
        # a record without a row (triggers off meanwhile): only a reconcile finds it
        conn.execute("ALTER TABLE articles DISABLE TRIGGER USER")
        conn.execute("DELETE FROM articles WHERE id = 1")
        conn.execute("ALTER TABLE articles ENABLE TRIGGER USER")
        again = reconcile_attachment(_factory(db_url), "arts", batch_size=7)
        assert again.records_checked == 29 + 1 and again.records_deleted == 1
        assert set(_records(conn)) == {str(i) for i in range(2, 31)}


def test_worker_role_drains_without_rights_on_the_app_table(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _insert(app, 1, 10)
    app.execute("CREATE ROLE attach_worker LOGIN PASSWORD 'worker-secret' IN ROLE embedplat_worker")
    try:
        params = psycopg.conninfo.conninfo_to_dict(app.info.dsn)
        params.pop("passfile", None)
        params.update(
            user="attach_worker", password="worker-secret", host=app.info.host, port=app.info.port
        )
        role_url = psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]
        denied = pytest.raises(psycopg.errors.InsufficientPrivilege)
        with psycopg.connect(role_url, autocommit=True) as worker, denied:
            worker.execute("SELECT count(*) FROM articles")
        report = drain(lambda: psycopg.connect(role_url), "arts")
        assert report.records_inserted == 10
        assert _records(app) == _expected(app)
    finally:
        app.execute("DROP OWNED BY attach_worker")
        app.execute("DROP ROLE attach_worker")


def test_the_worker_planner_sees_queued_keys_as_work(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    from embedplat_workers.tasks import collection_work

    _insert(app, 1, 10)
    (work,) = collection_work(app, cap=100, max_parallel=2)
    assert (work.stale_records, work.claimable_chunks, work.queued_keys) == (0, 0, 1)
    assert work.claimable == 1
    drain(_factory(db_url), "arts")
    (work,) = collection_work(app, cap=100, max_parallel=2)
    assert work.queued_keys == 0 and work.stale_records == 10


def test_the_metadata_gin_index_merges_no_pending_list_inside_app_writes(
    app: psycopg.Connection[Any],
) -> None:
    row = app.execute(
        "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'embedplat' AND c.relname = 'ix_records_metadata'"
    ).fetchone()
    assert row is not None and "fastupdate=off" in row[0]
