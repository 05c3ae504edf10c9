"""embedplat.text_sha256, the content hash of records and chunks (text_sha256.v2.sql, migration
0017): equal to Python's hashlib for any text, inlined by the planner (in queries and in the
generated columns), and the upgrade from v1 keeps every stored hash valid."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from embedplat.db import migrate
from embedplat.db.connection import libpq_url

# Text that byteain would read as an escape if it saw it undoubled (`\\`, octal `\nnn`, the
# `\x` hex prefix, a lone backslash), the characters around backslash in UTF-8 and every
# UTF-8 length (combining marks, 4-byte characters, the last code point).
EXAMPLES = [
    "",
    "\\",
    "\\\\",
    "\\\\\\",
    "\\x41",
    "\\x",
    "\\x00ff",
    "\\\\x41",
    "x\\x41",
    "\\101",
    "\\\\101",
    "\\0",
    "\\377",
    "\\400",
    "a\\b",
    "ends with \\",
    "C:\\Users\\new\\table",
    "\\\\\\101\\\\",
    "héllo wörld ✓",
    "😀 emoji, 👩‍👩‍👧 family",
    "𝄞 G clef",
    "e\u0301 combining acute",
    "Z\u0351\u036b\u0343\u036a\u0302 zalgo",
    "\U0010ffff last code point",
    "\uff3c fullwidth backslash, \u00a5 yen, \u20a9 won",
    "\x01\x7f\x80\u2028\ufeff controls",
    "tab\tnewline\ncarriage\r",
    "quotes ' \" and $$ $fn$",
]

# Text mixes arbitrary characters (no NUL: PostgreSQL text cannot hold it) with the ones escape
# sequences are made of, so backslash-digit and backslash-x runs come up often.
_texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(["\\", "x", "0", "1", "3", "4", "7", "8"]),
        st.characters(codec="utf-8", exclude_characters="\x00"),
    )
)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(libpq_url(db_url), autocommit=True) as connection:
        yield connection


def _database_hashes(
    conn: psycopg.Connection[Any], texts: list[str]
) -> list[tuple[str, bytes, bytes]]:
    """Each text as the database received it, its text_sha256 and v1's expression, in one
    round trip."""
    rows = conn.execute(
        "SELECT t, embedplat.text_sha256(t), sha256(convert_to(t, 'UTF8')) "
        "FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
        (texts,),
    ).fetchall()
    return [(str(t), bytes(h), bytes(v1)) for t, h, v1 in rows]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(texts=st.lists(_texts, max_size=40))
@example(texts=EXAMPLES)
def test_text_sha256_equals_hashlib_for_any_text(
    conn: psycopg.Connection[Any], texts: list[str]
) -> None:
    rows = _database_hashes(conn, texts)
    assert [t for t, _, _ in rows] == texts  # the database hashed exactly these texts
    for text, got, v1 in rows:
        assert got == hashlib.sha256(text.encode()).digest(), text
        assert got == v1, text


def test_text_sha256_of_null_is_null(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("SELECT embedplat.text_sha256(NULL)").fetchone() == (None,)


def test_text_sha256_is_inlined(conn: psycopg.Connection[Any]) -> None:
    """The planner replaces the call by its body: the plan computes sha256(...) itself."""
    plan = "\n".join(
        str(r[0])
        for r in conn.execute(
            "EXPLAIN (VERBOSE, COSTS OFF) "
            "SELECT embedplat.text_sha256(content) FROM embedplat.records"
        ).fetchall()
    )
    assert "sha256(" in plan and "text_sha256" not in plan, plan


def test_generated_columns_run_text_sha256_inlined(conn: psycopg.Connection[Any]) -> None:
    """Writing records and chunks calls no SQL function: PostgreSQL counts the calls of a
    function it runs (track_functions), never those of one it inlined. v1 counted one per
    row."""
    try:
        conn.execute("SET track_functions = 'all'")
    except psycopg.errors.InsufficientPrivilege:
        pytest.skip("track_functions needs a superuser connection")
    with conn.transaction():
        _insert_rows(conn, EXAMPLES)
        conn.execute("UPDATE embedplat.records SET content = content || '\\'")
        row = conn.execute(
            "SELECT pg_stat_get_xact_function_calls('embedplat.text_sha256(text)'::regprocedure)"
        ).fetchone()
        # The same counter sees a call that is not inlined (v1's body, as a function of its own).
        conn.execute(
            "CREATE FUNCTION pg_temp.v1_sha256(content text) RETURNS bytea LANGUAGE sql "
            "IMMUTABLE STRICT AS $$ SELECT sha256(convert_to(content, 'UTF8')) $$"
        )
        conn.execute("SELECT pg_temp.v1_sha256(content) FROM embedplat.records")
        v1 = conn.execute(
            "SELECT pg_stat_get_xact_function_calls('pg_temp.v1_sha256(text)'::regprocedure)"
        ).fetchone()
    assert row == (None,)
    assert v1 == (len(EXAMPLES),)
    _assert_stored_hashes(conn, {t + "\\" for t in EXAMPLES}, set(EXAMPLES))


def test_text_sha256_ignores_the_callers_collation(conn: psycopg.Connection[Any]) -> None:
    """replace() runs under COLLATE "C": a nondeterministic collation of the argument, which
    refuses substring searches (or could match a look-alike backslash), changes nothing."""
    try:
        conn.execute(
            "CREATE COLLATION pg_temp.loose (provider = icu, locale = 'und-u-ks-level1', "
            "deterministic = false)"
        )
    except psycopg.errors.FeatureNotSupported:
        pytest.skip("this PostgreSQL is built without ICU")
    rows = conn.execute(
        "SELECT t, embedplat.text_sha256(t COLLATE pg_temp.loose) FROM unnest(%s::text[]) AS u(t)",
        (EXAMPLES,),
    ).fetchall()
    assert {str(t): bytes(h) for t, h in rows} == {
        t: hashlib.sha256(t.encode()).digest() for t in EXAMPLES
    }


# -- the migration -------------------------------------------------------------------------------


def _insert_rows(conn: psycopg.Connection[Any], texts: list[str]) -> None:
    """One collection, a record per text and a chunk per record with the same text."""
    conn.execute(
        "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap) "
        "VALUES ('hashes', 'm', 100, 10)"
    )
    conn.execute(
        "INSERT INTO embedplat.records (collection_id, external_id, content) "
        "SELECT c.id, 'r' || u.i, u.t FROM embedplat.collections c, "
        "unnest(%s::text[]) WITH ORDINALITY AS u(t, i) WHERE c.name = 'hashes'",
        (texts,),
    )
    conn.execute(
        "INSERT INTO embedplat.chunks "
        "(record_id, collection_id, ordinal, content, char_start, char_end, token_count) "
        "SELECT id, collection_id, 0, content, 0, length(content), 1 FROM embedplat.records"
    )


def _assert_stored_hashes(
    conn: psycopg.Connection[Any], records: set[str], chunks: set[str]
) -> None:
    """Every stored content_hash / text_hash is hashlib's hash of its row's text."""
    for table, column, texts in (
        ("records", "content_hash", records),
        ("chunks", "text_hash", chunks),
    ):
        rows = conn.execute(f"SELECT content, {column} FROM embedplat.{table}").fetchall()
        assert {str(t) for t, _ in rows} == texts
        for text, stored in rows:
            assert bytes(stored) == hashlib.sha256(str(text).encode()).digest(), (table, text)


def _function(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    row = conn.execute(
        "SELECT 'embedplat.text_sha256(text)'::regprocedure::oid, "
        "pg_get_functiondef('embedplat.text_sha256(text)'::regprocedure)"
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def test_upgrade_to_0017_keeps_the_stored_hashes(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url, "0016")
    with psycopg.connect(libpq_url(empty_db_url), autocommit=True) as conn:
        _insert_rows(conn, EXAMPLES)
        oid, v1 = _function(conn)
    assert "convert_to" in v1

    # CREATE OR REPLACE of the function the generated columns use: allowed, same OID.
    migrate.upgrade(empty_db_url, "0017")
    with psycopg.connect(libpq_url(empty_db_url), autocommit=True) as conn:
        new_oid, v2 = _function(conn)
        assert new_oid == oid
        assert "replace(" in v2 and "convert_to" not in v2
        # v1's stored values, v2's recomputed ones and hashlib's agree.
        _assert_stored_hashes(conn, set(EXAMPLES), set(EXAMPLES))
        assert conn.execute(
            "SELECT count(*) FROM embedplat.records "
            "WHERE content_hash IS DISTINCT FROM embedplat.text_sha256(content)"
        ).fetchone() == (0,)
        # Rows written and rewritten under v2.
        conn.execute("UPDATE embedplat.records SET content = '\\x' || content")
        conn.execute("UPDATE embedplat.chunks SET content = content || '\\101'")
        _assert_stored_hashes(conn, {"\\x" + t for t in EXAMPLES}, {t + "\\101" for t in EXAMPLES})

    migrate.downgrade(empty_db_url, "0016")
    with psycopg.connect(libpq_url(empty_db_url), autocommit=True) as conn:
        assert _function(conn) == (oid, v1)
        conn.execute("UPDATE embedplat.chunks SET content = '\\\\' || content")
        _assert_stored_hashes(
            conn, {"\\x" + t for t in EXAMPLES}, {"\\\\" + t + "\\101" for t in EXAMPLES}
        )
