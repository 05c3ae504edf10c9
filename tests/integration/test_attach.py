"""Attached app tables (sql/attach.v1.sql, embedplat.attach): triggers keep records in step in
the writer's transaction, cost nothing when attached columns do not change, never fail the
app's writes, and back-fill / reconcile make the records equal the table."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from embedplat import attach as attach_mod
from embedplat.api import Platform
from embedplat.attach import (
    DEFAULT_BACKFILL_BATCH,
    attach_table,
    backfill,
    detach_table,
    get_attachment,
    list_attachments,
    reconcile_attachment,
    refuse_ingest_if_attached,
)
from embedplat.config import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL
from embedplat.db.connection import libpq_url
from embedplat.errors import InvalidInputError
from embedplat.ingest import InputProblem, records_from_dicts
from tests.fix_embedders import HashEmbedder

from .search_helpers import hash_sync

ARTICLES = """
CREATE TABLE public.articles (
    id integer PRIMARY KEY,
    title text,
    body text,
    author text,
    views integer NOT NULL DEFAULT 0,
    published boolean NOT NULL DEFAULT true
)"""


def _conn(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_url(url), **kwargs)


def _factory(url: str) -> Any:
    return lambda: _conn(url)


@pytest.fixture
def app(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection with the app's ``articles`` table (three rows)."""
    with _conn(db_url, autocommit=True) as conn:
        conn.execute(ARTICLES)
        conn.execute(
            "INSERT INTO articles (id, title, body, author) VALUES "
            "(1, 'Apples', 'Apples are red.', 'ann'), (2, 'Bananas', 'Bananas are long.', 'bob'),"
            "(3, 'Cherries', 'Cherries are small.', 'cy')"
        )
        yield conn


def _attach(url: str, collection: str = "arts", **options: Any) -> attach_mod.AttachReport:
    options.setdefault("text_columns", ["title", "body"])
    options.setdefault("metadata_columns", ["author"])
    options.setdefault("model", "test-hash-64")
    return attach_table(_factory(url), collection, "public.articles", **options)


def _records(conn: psycopg.Connection[Any], collection: str = "arts") -> dict[str, Any]:
    rows = conn.execute(
        "SELECT r.external_id, r.content, r.metadata FROM embedplat.records r "
        "JOIN embedplat.collections c ON c.id = r.collection_id WHERE c.name = %s",
        (collection,),
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def _expected(conn: psycopg.Connection[Any], where: str = "true") -> dict[str, Any]:
    """What the records of `arts` must be, derived in Python from the table (ingest's rules)."""
    rows = conn.execute(
        f"SELECT id, title, body, author, published FROM articles WHERE {where}"
    ).fetchall()
    out: dict[str, Any] = {}
    for row in rows:
        item = next(
            records_from_dicts(
                [{"id": row[0], "title": row[1], "body": row[2], "author": row[3]}],
                text_fields=("title", "body"),
                metadata_fields=("author",),
            )
        )
        if not isinstance(item, InputProblem):
            out[item.external_id] = (item.content, item.metadata)
    return out


def _record_row(conn: psycopg.Connection[Any], external_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT xmin::text, content_hash, updated_at, metadata FROM embedplat.records "
        "WHERE external_id = %s",
        (external_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def _stale(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM embedplat.stale_records)"
        " + (SELECT count(*) FROM embedplat.pending_work)"
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- defaults and the text rule are one definition ------------------------------------------


def test_sql_defaults_equal_the_python_ones(db_url: str) -> None:
    with _conn(db_url) as conn:
        attach_args = conn.execute(
            "SELECT pg_get_function_arguments('embedplat.attach'::regproc)"
        ).fetchone()
        backfill_args = conn.execute(
            "SELECT pg_get_function_arguments('embedplat.attach_backfill'::regproc)"
        ).fetchone()
    assert attach_args is not None and backfill_args is not None
    assert f"model text DEFAULT '{DEFAULT_MODEL}'::text" in attach_args[0]
    assert f"chunk_tokens integer DEFAULT {DEFAULT_CHUNK_TOKENS}" in attach_args[0]
    assert f"chunk_overlap integer DEFAULT {DEFAULT_CHUNK_OVERLAP}" in attach_args[0]
    assert f"batch_size integer DEFAULT {DEFAULT_BACKFILL_BATCH}" in backfill_args[0]
    # the Python functions default to the same batch size
    assert inspect.signature(backfill).parameters["batch_size"].default == DEFAULT_BACKFILL_BATCH


def test_blank_is_what_python_calls_whitespace(db_url: str) -> None:
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    others = ["\u200b", "\u180e", "x", "\ufeff", "_"]  # not whitespace to Python
    with _conn(db_url) as conn:
        for char in spaces:
            row = conn.execute(
                "SELECT embedplat.attach_text_part(%s), embedplat.attach_text_part(%s)",
                (char * 3, f"{char}a{char}"),
            ).fetchone()
            assert row == (None, f"{char}a{char}"), hex(ord(char))
        for char in others:
            row = conn.execute("SELECT embedplat.attach_text_part(%s)", (char,)).fetchone()
            assert row == (char,), hex(ord(char))


def test_content_is_joined_exactly_as_ingest_joins_text_fields(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    cases = [
        ("Title", "Body"),
        ("Title", None),
        (None, "Body only"),
        ("", "after empty"),
        ("  \t", "after blank"),
        ("\u3000", "\u2003"),  # both blank: no record
        (None, None),
        ("  padded  ", "\n\nkeeps its own newlines\n"),
        ("ünïcødé ✓", "e\u0301"),
    ]
    app.execute("DELETE FROM articles")
    for i, (title, body) in enumerate(cases, start=10):
        app.execute(
            "INSERT INTO articles (id, title, body, author) VALUES (%s, %s, %s, %s)",
            (i, title, body, None if i % 2 else f"a{i}"),
        )
    _attach(db_url)
    got = _records(app)
    expected = _expected(app)
    assert got == expected
    assert len(got) == len(cases) - 2  # the two rows without text have no record
    # and the triggers derive them the same way as the back-fill did
    app.execute("DELETE FROM articles")
    assert _records(app) == {}
    for i, (title, body) in enumerate(cases, start=10):
        app.execute(
            "INSERT INTO articles (id, title, body, author) VALUES (%s, %s, %s, %s)",
            (i, title, body, None if i % 2 else f"a{i}"),
        )
    assert _records(app) == expected


# -- triggers --------------------------------------------------------------------------------


def test_attach_backfills_and_triggers_follow_inserts_updates_deletes(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    report = _attach(db_url)
    assert report.done and report.rows_read == 3 and report.records_inserted == 3
    assert _records(app) == _expected(app)
    assert _records(app)["1"] == ("Apples\n\nApples are red.", {"author": "ann"})

    app.execute(
        "INSERT INTO articles (id, title, body, author) SELECT g, 'T' || g, 'B ' || g, 'z' "
        "FROM generate_series(100, 1099) g"
    )
    app.execute("UPDATE articles SET body = 'Apples are green.' WHERE id = 1")
    app.execute("DELETE FROM articles WHERE id BETWEEN 500 AND 599")
    app.execute("UPDATE articles SET author = 'bea' WHERE id = 2")
    assert _records(app) == _expected(app)
    assert len(_records(app)) == 903
    info = get_attachment(app, "arts")
    assert info is not None and info.state == "ok" and info.records == 903 and info.healthy


def test_update_of_other_columns_writes_nothing_and_metadata_only_causes_no_work(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _attach(db_url)
    hash_sync(db_url, "arts")
    assert _stale(app) == 0
    before = _record_row(app, "1")
    # a column that is not attached: the record row is not even rewritten (same xmin)
    app.execute("UPDATE articles SET views = views + 1 WHERE id = 1")
    app.execute("UPDATE articles SET views = views + 1")  # every row
    assert _record_row(app, "1") == before
    assert _stale(app) == 0
    # a rewrite of a text column to the same value: nothing either
    app.execute("UPDATE articles SET title = title")
    assert _record_row(app, "1") == before
    # metadata only: the metadata changes, the content hash does not, no work is created
    app.execute("UPDATE articles SET author = 'annie' WHERE id = 1")
    after = _record_row(app, "1")
    assert after[3] == {"author": "annie"} and after[1] == before[1] and after[0] != before[0]
    assert _stale(app) == 0
    # a text change: the record is stale until synced
    app.execute("UPDATE articles SET body = 'Apples are sweet.' WHERE id = 1")
    assert _stale(app) == 1
    report = hash_sync(db_url, "arts")
    assert report.chunks_embedded >= 1 and _stale(app) == 0


def test_delete_and_truncate_remove_records_chunks_and_vectors_in_the_same_transaction(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _attach(db_url)
    hash_sync(db_url, "arts")
    counts = "SELECT (SELECT count(*) FROM embedplat.records), (SELECT count(*) FROM embedplat.chunks), (SELECT count(*) FROM embedplat.embeddings)"
    assert app.execute(counts).fetchone() == (3, 3, 3)
    with app.transaction():
        app.execute("DELETE FROM articles WHERE id = 1")
        # inside the writer's transaction, before its commit
        assert app.execute(counts).fetchone() == (2, 2, 2)
    vector = HashEmbedder(64).embed(["Apples are red"])[0]
    hits = app.execute(
        "SELECT id FROM embedplat.search('arts', %s::real[]::vector, 10)", (vector.tolist(),)
    ).fetchall()
    assert {h[0] for h in hits} == {"2", "3"}
    with app.transaction():
        app.execute("TRUNCATE articles")
        assert app.execute(counts).fetchone() == (0, 0, 0)
    # a rolled-back delete leaves everything
    app.execute("INSERT INTO articles (id, title) VALUES (7, 'seven')")
    with pytest.raises(psycopg.errors.RaiseException), app.transaction():
        app.execute("DELETE FROM articles")
        app.execute("DO $$ BEGIN RAISE EXCEPTION 'app rolls back'; END $$")
    assert set(_records(app)) == {"7"}


def test_key_change_moves_the_record(db_url: str, app: psycopg.Connection[Any]) -> None:
    _attach(db_url)
    hash_sync(db_url, "arts")
    app.execute("UPDATE articles SET id = 42 WHERE id = 1")
    assert set(_records(app)) == {"2", "3", "42"}
    assert _records(app)["42"] == ("Apples\n\nApples are red.", {"author": "ann"})
    # the new record is stale (to be chunked), the old one is gone with its vectors
    assert app.execute("SELECT external_id FROM embedplat.stale_records").fetchall() == [("42",)]
    # every key changed by one statement
    app.execute("UPDATE articles SET id = id + 10")
    assert set(_records(app)) == {"12", "13", "52"}
    assert _records(app) == _expected(app)


def test_composite_key_external_id_is_reversible_and_joins_back(db_url: str) -> None:
    with _conn(db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tickets (tenant text NOT NULL, num bigint NOT NULL, body text, "
            "opened date, PRIMARY KEY (tenant, num))"
        )
        conn.execute(
            "INSERT INTO tickets VALUES ('acme', 1, 'printer on fire', '2024-01-02'), "
            "('acme', 2, 'login fails', '2024-01-03'), ('a\"b,c', 1, 'quotes, commas', NULL)"
        )
        attach_table(
            _factory(db_url),
            "tickets",
            "tickets",
            text_columns=["body"],
            metadata_columns=["opened"],
            model="test-hash-64",
        )
        ids = {r[0] for r in conn.execute("SELECT external_id FROM embedplat.records")}
        assert ids == {'["acme", "1"]', '["acme", "2"]', '["a\\"b,c", "1"]'}
        meta = conn.execute(
            'SELECT metadata FROM embedplat.records WHERE external_id = \'["acme", "1"]\''
        ).fetchone()
        assert meta == ({"opened": "2024-01-02"},)
        # reverse: each key value back from the id
        back = conn.execute(
            "SELECT t.tenant, t.num FROM embedplat.records r "
            "JOIN tickets t ON t.tenant = (r.external_id::jsonb ->> 0) "
            "             AND t.num = (r.external_id::jsonb ->> 1)::bigint "
            "ORDER BY 1, 2"
        ).fetchall()
        assert back == [('a"b,c', 1), ("acme", 1), ("acme", 2)]
        # forward: the helper gives the same id from the app's columns
        hash_sync(db_url, "tickets")
        vector = HashEmbedder(64).embed(["printer fire"])[0]
        rows = conn.execute(
            "SELECT t.tenant, t.num, s.similarity "
            "FROM embedplat.search('tickets', %s::real[]::vector, 1) s "
            "JOIN tickets t ON s.id = embedplat.attach_external_id(t.tenant, t.num::text)",
            (vector.tolist(),),
        ).fetchall()
        assert [(r[0], r[1]) for r in rows] == [("acme", 1)]
        # a change of one key column moves the record
        conn.execute("UPDATE tickets SET num = 9 WHERE tenant = 'acme' AND num = 2")
        ids = {r[0] for r in conn.execute("SELECT external_id FROM embedplat.records")}
        assert '["acme", "9"]' in ids and '["acme", "2"]' not in ids


def test_several_collections_attach_one_table(db_url: str, app: psycopg.Connection[Any]) -> None:
    _attach(db_url, "titles", text_columns=["title"], metadata_columns=[])
    _attach(db_url, "bodies", text_columns=["body"], metadata_columns=["author", "views"])
    app.execute(
        "INSERT INTO articles (id, title, body, author) VALUES (4, 'Dates', 'Sweet.', 'di')"
    )
    app.execute("UPDATE articles SET views = 5 WHERE id = 1")
    assert _records(app, "titles")["4"] == ("Dates", {})
    assert _records(app, "bodies")["4"] == ("Sweet.", {"author": "di", "views": 0})
    assert _records(app, "bodies")["1"] == ("Apples are red.", {"author": "ann", "views": 5})
    assert len(_records(app, "titles")) == len(_records(app, "bodies")) == 4
    assert [a.collection for a in list_attachments(app)] == ["bodies", "titles"]


def test_filter_column_keeps_only_included_rows(db_url: str, app: psycopg.Connection[Any]) -> None:
    app.execute("UPDATE articles SET published = false WHERE id = 3")
    _attach(db_url, filter_column="published")
    assert set(_records(app)) == {"1", "2"}
    app.execute("UPDATE articles SET published = false WHERE id = 1")  # leaves the filter
    app.execute("UPDATE articles SET published = true WHERE id = 3")  # enters it
    app.execute("INSERT INTO articles (id, title, published) VALUES (5, 'draft', false)")
    assert set(_records(app)) == {"2", "3"}
    assert _records(app) == _expected(app, "published")
    with pytest.raises(InvalidInputError, match="boolean"):
        _attach(db_url, "other", filter_column="author")


def test_attach_validates_its_arguments(db_url: str, app: psycopg.Connection[Any]) -> None:
    app.execute("CREATE TABLE nokey (id int, body text)")
    app.execute("CREATE TABLE nullable (id int UNIQUE, body text)")
    app.execute("CREATE TABLE part (id int NOT NULL, body text, UNIQUE (id, body))")
    cases = [
        (dict(text_columns=["nope"]), "has no column 'nope'"),
        (dict(text_columns=["title"], id_columns=["author"]), "NOT NULL"),
        (dict(text_columns=["title", "title"]), "named twice"),
        (dict(text_columns=["title"], metadata_columns=["ghost"]), "has no column 'ghost'"),
    ]
    for options, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            attach_table(_factory(db_url), "x", "articles", model="test-hash-64", **options)
    with pytest.raises(InvalidInputError, match="no table named"):
        attach_table(_factory(db_url), "x", "missing_table", text_columns=["body"])
    with pytest.raises(InvalidInputError, match="no primary key"):
        attach_table(_factory(db_url), "x", "nokey", text_columns=["body"])
    with pytest.raises(InvalidInputError, match="NOT NULL"):
        attach_table(_factory(db_url), "x", "nullable", id_columns=["id"], text_columns=["body"])
    with pytest.raises(InvalidInputError, match="unique index"):
        attach_table(_factory(db_url), "x", "part", id_columns=["id"], text_columns=["body"])
    with pytest.raises(InvalidInputError, match="not a permanent ordinary table"):
        attach_table(_factory(db_url), "x", "embedplat.attachment_status", text_columns=["x"])
    # nothing was created by the refused calls
    assert app.execute("SELECT count(*) FROM embedplat.collections").fetchone() == (0,)
    _attach(db_url)
    with pytest.raises(InvalidInputError, match="already attached"):
        _attach(db_url)


def _generated(conn: psycopg.Connection[Any]) -> dict[str, tuple[Any, ...]]:
    """The functions in embedplat_attach: name -> (definer?, settings, PUBLIC may execute?)."""
    rows = conn.execute(
        "SELECT p.proname, p.prosecdef, p.proconfig, "
        "has_function_privilege('public', p.oid, 'EXECUTE') FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'embedplat_attach'"
    ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def _own(*ids: int) -> set[str]:
    """The generated functions of these collections: a trigger and a drain function each."""
    return {f"attach_{kind}_c{i}" for i in ids for kind in ("trigger", "drain")}


def test_each_attachment_has_its_own_locked_down_trigger_function(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _attach(db_url)
    _attach(db_url, "titles", text_columns=["title"], metadata_columns=[])
    ids = dict(app.execute("SELECT c.name, c.id FROM embedplat.collections c").fetchall())
    functions = _generated(app)
    assert set(functions) == _own(ids["arts"], ids["titles"])
    for definer, settings, public_may_execute in functions.values():
        assert definer and not public_may_execute
        assert "search_path=pg_catalog, pg_temp" in settings
    # nobody but the owner may use or create anything in the generated functions' schema
    assert app.execute(
        "SELECT has_schema_privilege('public', 'embedplat_attach', 'USAGE'), "
        "has_schema_privilege('public', 'embedplat_attach', 'CREATE')"
    ).fetchone() == (False, False)
    # the triggers call them
    called = {
        r[0]
        for r in app.execute(
            "SELECT t.tgfoid::regproc::text FROM pg_trigger t "
            "WHERE t.tgrelid = 'public.articles'::regclass AND NOT t.tgisinternal"
        ).fetchall()
    }
    assert called == {f"embedplat_attach.attach_trigger_c{i}" for i in ids.values()}
    # a refresh re-generates (same name), a detach drops only its own function
    _attach(db_url, "titles", text_columns=["body"], refresh=True)
    assert set(_generated(app)) == _own(ids["arts"], ids["titles"])
    app.execute("UPDATE articles SET body = 'Apples are green.' WHERE id = 1")
    assert _records(app, "titles")["1"][0] == "Apples are green."
    with app.transaction():
        detach_table(app, "titles")
    assert set(_generated(app)) == _own(ids["arts"])
    # dropping the collection detaches it and drops the function too
    app.execute("DELETE FROM embedplat.collections WHERE name = 'arts'")
    assert _generated(app) == {}
    assert app.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.articles'::regclass "
        "AND NOT tgisinternal"
    ).fetchone() == (0,)


def test_update_of_no_attached_column_exits_before_touching_embedplat(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _attach(db_url)
    warnings: list[str] = []
    app.add_notice_handler(lambda d: warnings.append(str(d.message_primary)))
    app.execute("SET lock_timeout = '2s'")
    with _conn(db_url) as other:
        # While embedplat's tables are locked, only a trigger call that never reaches them
        # completes cleanly; one that does runs into lock_timeout (caught: a warning).
        other.execute("LOCK embedplat.records, embedplat.attachments IN ACCESS EXCLUSIVE MODE")
        app.execute("UPDATE articles SET views = views + 1")
        app.execute("UPDATE articles SET title = title, published = published")
        assert warnings == []
        app.execute("UPDATE articles SET title = 'Apricots' WHERE id = 1")
        assert len(warnings) == 1 and "lock timeout" in warnings[0]
        other.rollback()
    app.execute("RESET lock_timeout")
    assert reconcile_attachment(_factory(db_url), "arts").records_updated == 1
    # rows that swap their attached values: the multiset is the same, and so are the records
    app.execute(
        "UPDATE articles a SET title = b.title, body = b.body, author = b.author "
        "FROM articles b WHERE (a.id, b.id) IN ((1, 2), (2, 1))"
    )
    assert _records(app) == _expected(app)
    # a key change is a change: the records follow their keys
    app.execute("UPDATE articles SET id = id + 10 WHERE id IN (1, 2)")
    assert _records(app) == _expected(app)


# -- the app's writes never fail -------------------------------------------------------------


def test_app_role_without_rights_on_embedplat_writes_its_table(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _attach(db_url)
    fn = app.execute(
        "SELECT embedplat.attach_function_name(collection_id) FROM embedplat.attachments"
    ).fetchone()
    assert fn is not None and fn[0].startswith("embedplat_attach.attach_trigger_c")
    app.execute("CREATE ROLE attach_app LOGIN PASSWORD 'app-secret'")
    app.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON public.articles TO attach_app")
    params = psycopg.conninfo.conninfo_to_dict(libpq_url(db_url))
    params.pop("passfile", None)
    params.update(user="attach_app", password="app-secret")
    role_url = psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]
    with psycopg.connect(role_url, autocommit=True) as as_app:
        # the role really has no rights on embedplat's tables
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_app.execute("SELECT count(*) FROM embedplat.records")
        as_app.execute("INSERT INTO articles (id, title, body) VALUES (10, 'Figs', 'Figs.')")
        as_app.execute("UPDATE articles SET body = 'Apples are ripe.' WHERE id = 1")
        as_app.execute("DELETE FROM articles WHERE id = 2")
        notices: list[str] = []
        as_app.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        as_app.execute("UPDATE articles SET author = 'x' WHERE id = 3")
        # nor can it use the attachment's trigger function on a table of its own to write records
        as_app.execute("CREATE TEMP TABLE mine (id int PRIMARY KEY, title text, body text)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_app.execute(
                "CREATE TRIGGER t AFTER INSERT ON mine REFERENCING NEW TABLE AS new_rows "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {fn[0]}()"
            )
    assert notices == []
    assert _records(app) == _expected(app)
    assert set(_records(app)) == {"1", "3", "10"}


def test_schema_changes_never_fail_the_app_and_refresh_adapts(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _attach(db_url)
    hash_sync(db_url, "arts")
    app.execute("ALTER TABLE articles RENAME COLUMN body TO content")
    warnings: list[str] = []
    app.add_notice_handler(lambda d: warnings.append(str(d.message_primary)))
    # every kind of write still succeeds
    app.execute("INSERT INTO articles (id, title, content) VALUES (4, 'Dates', 'Dates.')")
    app.execute("UPDATE articles SET content = 'Apples are blue.' WHERE id = 1")
    app.execute("DELETE FROM articles WHERE id = 2")  # the key columns are still there
    assert app.execute("SELECT count(*) FROM articles").fetchone() == (3,)
    assert warnings and "column body of public.articles no longer exists" in warnings[0]
    info = get_attachment(app, "arts")
    assert info is not None
    assert info.state == "columns_missing" and not info.healthy
    assert info.missing_columns == ("body",)
    assert info.last_error is not None and "no longer exists" in info.last_error
    assert "2" not in _records(app)  # the delete went through: it needs only the key
    with pytest.raises(InvalidInputError, match="no longer exists"):
        reconcile_attachment(_factory(db_url), "arts")
    # a refresh with the new name re-derives every record and clears the error
    report = _attach(db_url, text_columns=["title", "content"], refresh=True)
    assert report.done
    info = get_attachment(app, "arts")
    assert info is not None and info.state == "ok" and info.healthy and info.last_error is None
    assert _records(app)["1"] == ("Apples\n\nApples are blue.", {"author": "ann"})
    assert set(_records(app)) == {"1", "3", "4"}
    # a column of another type: cast through its text form, never an error
    app.execute("ALTER TABLE articles ALTER COLUMN title TYPE varchar(40)")
    app.execute("ALTER TABLE articles ADD COLUMN tags text[]")
    _attach(db_url, "tags", text_columns=["tags"], metadata_columns=["views", "tags"])
    app.execute("UPDATE articles SET tags = ARRAY['red', 'fruit'] WHERE id = 1")
    assert _records(app, "tags")["1"] == ("{red,fruit}", {"views": 0, "tags": ["red", "fruit"]})
    # a renamed table is followed; a dropped one is reported
    app.execute("ALTER TABLE articles RENAME TO posts")
    app.execute("UPDATE posts SET content = 'Apples are gone.' WHERE id = 1")
    info = get_attachment(app, "arts")
    assert info is not None and info.source == "posts" and info.state == "ok"
    assert _records(app)["1"][0] == "Apples\n\nApples are gone."
    app.execute("DROP TABLE posts")
    info = get_attachment(app, "arts")
    assert info is not None and info.state == "source_dropped"
    assert info.source == "public.articles" and not info.source_exists
    with pytest.raises(InvalidInputError, match="no longer exists"):
        reconcile_attachment(_factory(db_url), "arts")
    with app.transaction():
        detach_table(app, "arts")
    assert get_attachment(app, "arts") is None
    assert len(_records(app)) == 3  # records stay unless asked


def test_reconcile_repairs_drift_after_triggers_were_disabled(
    db_url: str, app: psycopg.Connection[Any]
) -> None:
    _attach(db_url)
    app.execute("ALTER TABLE articles DISABLE TRIGGER USER")
    assert get_attachment(app, "arts").state == "triggers_missing"  # type: ignore[union-attr]
    app.execute(
        "INSERT INTO articles (id, title) SELECT g, 'n' || g FROM generate_series(10, 60) g"
    )
    app.execute("UPDATE articles SET body = 'changed' WHERE id = 1")
    app.execute("DELETE FROM articles WHERE id = 2")
    app.execute("ALTER TABLE articles ENABLE TRIGGER USER")
    # drift by hand in the records too: an extra record, a changed one, a bogus key
    app.execute(
        "INSERT INTO embedplat.records (collection_id, external_id, content) "
        "SELECT collection_id, x, 'stray' FROM embedplat.attachments, "
        "unnest(ARRAY['999', 'not-a-number', '007', '3 ']) x"
    )
    app.execute(
        "UPDATE embedplat.records SET metadata = '{\"author\": \"zz\"}' WHERE external_id = '3'"
    )
    assert _records(app) != _expected(app)
    report = reconcile_attachment(_factory(db_url), "arts", batch_size=7)
    assert _records(app) == _expected(app)
    assert report.records_inserted == 51 and report.records_deleted == 5
    assert report.records_updated == 2 and report.batches > 2
    # the SQL function does the same in one call
    app.execute("ALTER TABLE articles DISABLE TRIGGER USER")
    app.execute("DELETE FROM articles WHERE id > 30")
    app.execute("ALTER TABLE articles ENABLE TRIGGER USER")
    row = app.execute("SELECT * FROM embedplat.attach_reconcile('arts', 5)").fetchone()
    assert row is not None and row[3] == 30
    assert _records(app) == _expected(app)


def test_ingest_into_an_attached_collection_is_refused(
    db_url: str, app: psycopg.Connection[Any], platform: Platform
) -> None:
    _attach(db_url)
    cid = app.execute("SELECT id FROM embedplat.collections WHERE name = 'arts'").fetchone()
    assert cid is not None
    with pytest.raises(InvalidInputError, match="attached to table articles"):
        refuse_ingest_if_attached(app, cid[0])
    with pytest.raises(InvalidInputError, match="nothing was ingested"):
        platform.ingest("arts", [{"id": "x", "text": "ingested"}])
    assert "x" not in _records(app)
    with app.transaction():
        detach_table(app, "arts")
    refuse_ingest_if_attached(app, cid[0])  # detached: allowed again
    assert platform.ingest("arts", [{"id": "x", "text": "ingested"}]).inserted == 1


def test_detach_drops_triggers_and_optionally_records(
    db_url: str, app: psycopg.Connection[Any], platform: Platform
) -> None:
    _attach(db_url)
    _attach(db_url, "second", text_columns=["title"])
    triggers = (
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'articles'::regclass AND NOT tgisinternal"
    )
    assert app.execute(triggers).fetchone() == (8,)
    platform.detach("arts", drop_records=True)
    assert app.execute(triggers).fetchone() == (4,)
    assert _records(app) == {}
    app.execute("INSERT INTO articles (id, title) VALUES (9, 'nine')")
    assert _records(app) == {}  # detached: no longer followed
    # dropping an attached collection detaches it
    platform.drop_collection("second")
    assert app.execute(triggers).fetchone() == (0,)
    assert platform.attachments() == []
    with pytest.raises(InvalidInputError, match="not attached"):
        platform.detach("arts")


def test_backfill_resumes_where_it_stopped(db_url: str, app: psycopg.Connection[Any]) -> None:
    app.execute(
        "INSERT INTO articles (id, title) SELECT g, 't' || g FROM generate_series(10, 509) g"
    )
    report = _attach(db_url, run_backfill=False)
    assert report.rows_read == 0 and get_attachment(app, "arts").state == "backfilling"  # type: ignore[union-attr]
    # two batches by hand, then the rest from where they stopped
    for _ in range(2):
        app.execute("SELECT * FROM embedplat.attach_backfill('arts', 100)")
    assert len(_records(app)) == 200
    report = backfill(_factory(db_url), "arts", batch_size=100)
    assert report.rows_read == 303 and report.records_inserted == 303 and report.done
    assert _records(app) == _expected(app)
    assert get_attachment(app, "arts").state == "ok"  # type: ignore[union-attr]


def test_notify_wakes_workers_for_app_writes(db_url: str, app: psycopg.Connection[Any]) -> None:
    _attach(db_url)
    with _conn(db_url, autocommit=True) as listener:
        listener.execute("LISTEN embedplat_changes")
        app.execute("INSERT INTO articles (id, title) VALUES (77, 'new')")
        got = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
    cid = app.execute("SELECT id FROM embedplat.collections WHERE name = 'arts'").fetchone()
    assert cid is not None and got == [str(cid[0])]


def test_quoted_identifiers_are_safe(db_url: str) -> None:
    with _conn(db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA {}; CREATE TABLE {}.{} ({} int PRIMARY KEY, {} text)").format(
                sql.Identifier("App Schema"),
                sql.Identifier("App Schema"),
                sql.Identifier('Weird "Table"; DROP'),
                sql.Identifier("Id"),
                sql.Identifier("bo'dy\"; --"),
            )
        )
        table = (
            sql.SQL("{}.{}")
            .format(sql.Identifier("App Schema"), sql.Identifier('Weird "Table"; DROP'))
            .as_string(conn)
        )
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 'one')").format(sql.SQL(table))  # type: ignore[arg-type]
        )
        attach_table(
            _factory(db_url), "weird", table, text_columns=["bo'dy\"; --"], model="test-hash-64"
        )
        conn.execute(sql.SQL("INSERT INTO {} VALUES (2, 'two')").format(sql.SQL(table)))  # type: ignore[arg-type]
        assert set(_records(conn, "weird")) == {"1", "2"}
        assert get_attachment(conn, "weird").state == "ok"  # type: ignore[union-attr]


def test_cli_ingest_into_an_attached_collection_is_one_error_line(
    db_url: str, app: psycopg.Connection[Any], url_env: dict[str, str], tmp_path: Any
) -> None:
    from tests.fix_cli import run

    _attach(db_url)
    source = tmp_path / "rows.jsonl"
    source.write_text('{"id": "x", "text": "ingested"}\n')
    proc = run(["ingest", "arts", str(source)], url_env, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "attached to table" in lines[0]
    assert "x" not in _records(app)
