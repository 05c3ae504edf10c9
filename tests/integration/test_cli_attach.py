"""`embedplat attach | detach | attachments` as subprocesses on a real database: an app table
becomes a collection that sync, search and status treat like any other; ingest into it is
refused; a bad column stores nothing; detach keeps or drops the records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from embedplat import attach as attach_mod
from embedplat.cli import attach as cli_attach
from embedplat.db.connection import libpq_url
from tests.fix_cli import documented_keys, run

MODEL = "test-hash-64"
ROWS = {
    1: ("Apples", "Apples are red and crisp.", "ann", True),
    2: ("Bananas", "Bananas are long and yellow.", "bob", True),
    3: ("Cherries", "Cherries are small and dark.", "cy", False),
}


def _lines(text: str) -> list[str]:
    return text.strip().splitlines()


@pytest.fixture
def app(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection of "the app", with its own ``articles`` table (three rows)."""
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.articles (id integer PRIMARY KEY, title text, body text, "
            "author text, published boolean NOT NULL DEFAULT true, views integer DEFAULT 0)"
        )
        for key, (title, body, author, published) in ROWS.items():
            conn.execute(
                "INSERT INTO articles (id, title, body, author, published) "
                "VALUES (%s, %s, %s, %s, %s)",
                (key, title, body, author, published),
            )
        yield conn


def _records(conn: psycopg.Connection[Any], collection: str = "arts") -> dict[str, Any]:
    rows = conn.execute(
        "SELECT r.external_id, r.content, r.metadata FROM embedplat.records r "
        "JOIN embedplat.collections c ON c.id = r.collection_id WHERE c.name = %s",
        (collection,),
    ).fetchall()
    return {external_id: (content, metadata) for external_id, content, metadata in rows}


def _triggers(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.articles'::regclass "
        "AND NOT tgisinternal"
    ).fetchone()
    assert row is not None
    return int(row[0])


ATTACH = ["attach", "arts", "public.articles", "--text", "title", "--text", "body"]


def test_attach_sync_search_status_refuse_ingest_detach(
    app: psycopg.Connection[Any], url_env: dict[str, str]
) -> None:
    proc = run([*ATTACH, "--metadata", "author", "--model", MODEL], url_env)
    assert _lines(proc.stdout) == [
        "attached 'arts' to articles: 3 rows read, 3 records inserted, 0 updated, 0 deleted "
        "(2 transactions, 0 retried)"
    ]
    # Text columns joined as `ingest --text-field` joins them; metadata from the column.
    assert _records(app) == {
        str(key): (f"{title}\n\n{body}", {"author": author})
        for key, (title, body, author, _) in ROWS.items()
    }

    run(["sync", "arts", "--no-index"], url_env)
    (line,) = _lines(run(["search", "arts", ROWS[2][1], "-k", "3", "--json"], url_env).stdout)
    hits = json.loads(line)["hits"]
    # The app's own ids come back, the best one first: they join back to its rows.
    assert hits[0]["id"] == "2" and hits[0]["metadata"] == {"author": "bob"}
    assert {hit["id"] for hit in hits} == {"1", "2", "3"}
    # From plain SQL, joined back on the key as docs/attach.md says (record 2's vector as query).
    joined = app.execute(
        "SELECT a.title FROM embedplat.search('arts', ("
        "  SELECT e.embedding FROM embedplat.embeddings e"
        "  JOIN embedplat.chunks ch ON ch.id = e.chunk_id"
        "  JOIN embedplat.records r ON r.id = ch.record_id WHERE r.external_id = '2'), 1) s "
        "JOIN public.articles a ON a.id = s.id::integer"
    ).fetchall()
    assert joined == [("Bananas",)]

    (status,) = json.loads(run(["status", "--json"], url_env).stdout)["collections"]
    assert (status["name"], status["attached_to"], status["attachment_state"]) == (
        "arts",
        "articles",
        "ok",
    )
    assert status["attachment_error"] is None and status["embedded"] == 3

    # The table is the source of truth: ingest is refused, in one line, and stores nothing.
    refused = run(
        ["ingest", "arts", "-"], url_env, stdin='{"id": "x", "text": "sneaky"}\n', check=False
    )
    assert refused.returncode == 1, refused.stderr
    (error,) = _lines(refused.stderr)
    assert error.startswith("error: ") and "attached to table" in error
    assert "x" not in _records(app)

    # The app writes its table; the triggers keep the records in step, the view shows it.
    app.execute(
        "INSERT INTO articles (id, title, body, author) VALUES (4, 'Dates', 'Sweet.', 'di')"
    )
    app.execute("DELETE FROM articles WHERE id = 1")
    listed = json.loads(run(["attachments", "--json"], url_env).stdout)["attachments"]
    (item,) = listed
    assert set(item) == documented_keys("attachments --json")
    assert (item["collection"], item["source"], item["state"], item["records"]) == (
        "arts",
        "articles",
        "ok",
        3,
    )
    assert (item["id_columns"], item["text_columns"], item["metadata_columns"]) == (
        ["id"],
        ["title", "body"],
        ["author"],
    )
    (text_line,) = _lines(run(["attachments"], url_env).stdout)
    assert text_line.split("\t")[:3] == ["arts", "articles", "ok"]

    # A refresh re-derives every record from the table: nothing drifted, nothing changes.
    refreshed = json.loads(run([*ATTACH[:3], "--refresh", "--json"], url_env).stdout)
    assert set(refreshed) == documented_keys("attach --json")
    assert refreshed["done"] is True and refreshed["rows_read"] == 3
    assert (refreshed["records_inserted"], refreshed["records_deleted"]) == (0, 0)

    detached = json.loads(run(["detach", "arts", "--json"], url_env).stdout)
    assert set(detached) == documented_keys("detach --json")
    assert detached == {
        "collection": "arts",
        "source": "articles",
        "drop_records": False,
        "records": 3,
    }
    assert _triggers(app) == 0
    # No longer followed: a new row gets no record; the old records stay searchable.
    app.execute("INSERT INTO articles (id, title, body) VALUES (5, 'Elder', 'Berries.')")
    assert set(_records(app)) == {"2", "3", "4"}
    assert json.loads(run(["attachments", "--json"], url_env).stdout) == {"attachments": []}
    assert _lines(run(["attachments"], url_env).stdout)[0].startswith("no attached tables")
    # Detached, the collection takes ingest again.
    run(["ingest", "arts", "-"], url_env, stdin='{"id": "x", "text": "now fine"}\n')


def test_an_unknown_column_or_table_is_one_error_line_and_stores_nothing(
    app: psycopg.Connection[Any], url_env: dict[str, str]
) -> None:
    for args, needle in (
        ([*ATTACH, "--text", "nope", "--model", MODEL], "'nope'"),
        ([*ATTACH, "--metadata", "author", "--id", "missing", "--model", MODEL], "'missing'"),
        (["attach", "arts", "public.nosuch", "--text", "body", "--model", MODEL], "nosuch"),
        (["attach", "arts", "public.articles", "--model", MODEL], "text column"),
    ):
        proc = run(args, url_env, check=False)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stdout == ""
        (line,) = _lines(proc.stderr)
        assert line.startswith("error: ") and needle in line, line
    # Checked before anything changed: no collection, no attachment, no trigger, no record.
    assert app.execute("SELECT count(*) FROM embedplat.collections").fetchone() == (0,)
    assert app.execute("SELECT count(*) FROM embedplat.attachments").fetchone() == (0,)
    assert _triggers(app) == 0
    # Detaching a collection that is not attached is refused in one line too.
    run(["collection", "create", "plain", "--model", MODEL], url_env)
    proc = run(["detach", "plain"], url_env, check=False)
    assert proc.returncode == 1
    (line,) = _lines(proc.stderr)
    assert line.startswith("error: ") and "not attached" in line, line


def test_no_backfill_filter_then_reconcile_and_detach_dropping_records(
    app: psycopg.Connection[Any], url_env: dict[str, str]
) -> None:
    proc = run(
        [*ATTACH[:5], "--id", "id", "--filter", "published", "--no-backfill", "--model", MODEL],
        url_env,
    )
    assert _lines(proc.stdout) == [
        "attached 'arts' to articles; rows already there get records with "
        "`embedplat sync --reconcile`"
    ]
    assert _records(app) == {}
    # The triggers are live at once; the filter keeps unpublished rows out.
    app.execute(
        "INSERT INTO articles (id, title, published) VALUES (7, 'Figs', true), (8, 'Grapes', false)"
    )
    assert set(_records(app)) == {"7"}
    # `sync --reconcile` back-fills the rows that were already there (published ones only).
    run(["sync", "--reconcile", "--no-index"], url_env)
    assert _records(app) == {"1": ("Apples", {}), "2": ("Bananas", {}), "7": ("Figs", {})}

    proc = run(["detach", "arts", "--drop-records"], url_env)
    assert _lines(proc.stdout) == [
        "detached 'arts' from articles (its records, chunks and vectors deleted)"
    ]
    assert _records(app) == {} and _triggers(app) == 0
    assert app.execute("SELECT count(*) FROM embedplat.chunks").fetchone() == (0,)
    assert app.execute("SELECT count(*) FROM embedplat.embeddings").fetchone() == (0,)
    # The collection itself stays; the app's table is untouched.
    assert app.execute("SELECT count(*) FROM embedplat.collections").fetchone() == (1,)
    assert app.execute("SELECT count(*) FROM articles").fetchone() == (5,)


def test_the_cli_batch_default_is_the_library_one() -> None:
    # The CLI spells the default itself (so --help does not import psycopg); one source.
    assert cli_attach.DEFAULT_BACKFILL_BATCH == attach_mod.DEFAULT_BACKFILL_BATCH
    assert cli_attach.DEFAULT_INLINE_ROWS == attach_mod.DEFAULT_INLINE_ROWS


def test_inline_rows_queues_bulk_statements_until_sync_drains_them(
    app: psycopg.Connection[Any], url_env: dict[str, str]
) -> None:
    run([*ATTACH, "--model", MODEL, "--inline-rows", "1"], url_env)
    app.execute(
        "INSERT INTO articles (id, title, body) VALUES (10, 'Figs', 'Figs are sweet.'), "
        "(11, 'Grapes', 'Grapes grow in bunches.')"
    )
    assert set(_records(app)) == {"1", "2", "3"}  # two rows > inline_rows 1: queued
    listing = json.loads(run(["attachments", "--json"], url_env).stdout)["attachments"]
    assert [(a["inline_rows"], a["pending_rows"]) for a in listing] == [(1, 2)]
    assert "2 rows queued for the next sync" in run(["attachments"], url_env).stdout
    (status,) = json.loads(run(["status", "--json"], url_env).stdout)["collections"]
    assert status["pending_rows"] == 2
    report = json.loads(run(["sync", "--no-index", "--json"], url_env).stdout)
    assert report["attached_rows_drained"] == 2 and report["records_chunked"] == 5
    assert set(_records(app)) == {"1", "2", "3", "10", "11"}
