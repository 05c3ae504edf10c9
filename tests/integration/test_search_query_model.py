"""Search calls carry the model of their query vector (search.v5.sql, migration 0015):
embedplat.search / hybrid_search refuse a vector of another model than the collection's active
one, naming both; Platform passes its embedder's identity and, when the collection's model was
swapped between embedding the query and searching, embeds the query again with the new model
and retries once."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.db.vectors import vector_literal
from embedplat.embedders import Embedder
from tests.fix_embedders import HashEmbedder

from .search_helpers import hash_collection, hash_sync, word_rows

MODEL = "test-hash-64"
FINGERPRINT = HashEmbedder(64).fingerprint

SEARCH = (
    "SELECT id, similarity FROM embedplat.search(%s, %s::vector, 5, "
    "query_model => %s, query_fingerprint => %s)"
)
HYBRID = (
    "SELECT id, score FROM embedplat.hybrid_search(%s, %s, %s::vector, 5, "
    "query_model => %s, query_fingerprint => %s)"
)


class SaltedEmbedder(HashEmbedder):
    """Another model of the same dimension: hashed words with a salt, so its vectors differ
    from test-hash-N's (texts sharing words are still similar). Counts its calls like
    :class:`HashEmbedder`."""

    def __init__(self, dimensions: int, salt: str) -> None:
        super().__init__(dimensions)
        self.salt = salt

    @property
    def name(self) -> str:
        return f"salted-{self.salt}-{self.dimensions}"

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"salted:{self.salt}:{self.dimensions}".encode()).hexdigest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        salted = [" ".join(f"{self.salt}{w}" for w in re.findall(r"\w+", t.lower())) for t in texts]
        return super().embed(salted)


def _rows(n: int = 200) -> list[dict[str, Any]]:
    return word_rows(n, seed=5, metadata=lambda i, rng: {"bucket": i % 10})


@pytest.fixture
def docs(platform: Platform, db_url: str) -> list[dict[str, Any]]:
    """Collection ``docs``, embedded with test-hash-64."""
    rows = _rows()
    hash_collection(platform, db_url, rows)
    return rows


def _query(text: str = "apple banana harbor") -> str:
    return vector_literal(HashEmbedder(64).embed([text])[0])


def _connect(db_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_url(db_url), autocommit=True)


def _switch(db_url: str, embedder: Embedder, collection: str = "docs") -> None:
    """What the end of a model switch does, by SQL: ``embedder``'s model registered, its
    vectors for every chunk of the collection stored, then the collection's active model
    changed in one transaction."""
    with psycopg.connect(libpq_url(db_url)) as conn:
        (model_id,) = conn.execute(
            "INSERT INTO embedplat.embedding_models (name, dimensions, normalized, fingerprint) "
            "VALUES (%s, %s, true, %s) RETURNING id",
            (embedder.name, embedder.dimensions, embedder.fingerprint),
        ).fetchone() or (None,)
        chunks = conn.execute(
            "SELECT ch.id, ch.record_id, ch.collection_id, ch.text_hash, ch.content "
            "FROM embedplat.chunks ch JOIN embedplat.collections c ON c.id = ch.collection_id "
            "WHERE c.name = %s ORDER BY ch.id",
            (collection,),
        ).fetchall()
        assert chunks
        vectors = embedder.embed([c[4] for c in chunks])
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO embedplat.embeddings "
                "(chunk_id, model_id, collection_id, record_id, text_hash, embedding) "
                "VALUES (%s, %s, %s, %s, %s, %s::vector)",
                [
                    (c[0], model_id, c[2], c[1], c[3], vector_literal(v))
                    for c, v in zip(chunks, vectors, strict=True)
                ],
            )
        conn.execute(
            "UPDATE embedplat.collections SET active_model_id = %s, model_name = %s "
            "WHERE name = %s",
            (model_id, embedder.name, collection),
        )


def _exact(rows: list[dict[str, Any]], embedder: Embedder, query: str, k: int) -> list[float]:
    """The ``k`` best cosine similarities of ``query`` to ``rows`` under ``embedder`` (one chunk
    per record), best first, rounded."""
    vectors = embedder.embed([str(r["text"]) for r in rows])
    sims = vectors @ embedder.embed([query])[0]
    return [round(float(s), 4) for s in sorted(sims, reverse=True)[:k]]


# -- SQL ---------------------------------------------------------------------------------------


def test_the_right_model_searches_as_without_it(db_url: str, docs) -> None:
    query = _query()
    with _connect(db_url) as conn:
        plain = conn.execute(SEARCH, ("docs", query, None, None)).fetchall()
        assert len(plain) == 5
        for model, fingerprint in [
            (MODEL, None),
            (MODEL, FINGERPRINT),
            (MODEL, FINGERPRINT[:12]),
            (None, FINGERPRINT[:20]),
        ]:
            assert conn.execute(SEARCH, ("docs", query, model, fingerprint)).fetchall() == plain
        hybrid = conn.execute(HYBRID, ("docs", "apple", query, None, None)).fetchall()
        assert (
            hybrid
            and conn.execute(HYBRID, ("docs", "apple", query, MODEL, FINGERPRINT)).fetchall()
            == hybrid
        )
        # The positional forms of earlier versions still resolve: v1's four arguments and
        # v2's eight.
        four = conn.execute(
            "SELECT id, similarity FROM embedplat.search('docs', %s::vector, 5, '{}')", (query,)
        ).fetchall()
        eight = conn.execute(
            "SELECT id, similarity FROM embedplat.search("
            "'docs', %s::vector, 5, '{}', NULL, true, NULL, NULL)",
            (query,),
        ).fetchall()
        assert four == eight == plain


def test_another_model_name_is_refused_naming_both(db_url: str, docs) -> None:
    other = SaltedEmbedder(64, "x")
    with _connect(db_url) as conn:
        for statement, args in [
            (SEARCH, ("docs", _query())),
            (HYBRID, ("docs", "apple", _query())),
        ]:
            with pytest.raises(psycopg.errors.DataException) as info:
                conn.execute(statement, (*args, other.name, other.fingerprint))
            message = info.value.diag.message_primary or ""
            caller = "hybrid_search" if statement is HYBRID else "search"
            assert message == (
                f"embedplat.{caller}: the query vector was embedded with {other.name} "
                f"(fingerprint {other.fingerprint[:12]}), but collection 'docs' is embedded "
                f"with {MODEL} (fingerprint {FINGERPRINT[:12]}); embed the query with that model"
            )
            with pytest.raises(psycopg.errors.DataException, match=f"with {other.name}, but"):
                conn.execute(statement, (*args, other.name, None))


def test_another_fingerprint_is_refused(db_url: str, docs) -> None:
    """Same name, other files (a model folder that changed): the fingerprint tells."""
    wrong = "0" * 64
    with _connect(db_url) as conn:
        for model, fingerprint in [(MODEL, wrong), (None, wrong[:12]), (MODEL, FINGERPRINT + "0")]:
            with pytest.raises(psycopg.errors.DataException, match="embed the query") as info:
                conn.execute(SEARCH, ("docs", _query(), model, fingerprint))
            assert f"is embedded with {MODEL} (fingerprint {FINGERPRINT[:12]})" in str(info.value)
        with pytest.raises(psycopg.errors.DataException, match="with a model of fingerprint 0000"):
            conn.execute(HYBRID, ("docs", "apple", _query(), None, wrong))


def test_malformed_model_arguments_are_refused(db_url: str, docs) -> None:
    with _connect(db_url) as conn:
        for model, fingerprint, message in [
            (MODEL, FINGERPRINT[:11], "at least 12 characters"),
            ("", None, "query_model must be a model name"),
        ]:
            for statement, args in [
                (SEARCH, ("docs", _query())),
                (HYBRID, ("docs", "apple", _query())),
            ]:
                with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
                    conn.execute(statement, (*args, model, fingerprint))


def test_without_a_model_the_dimension_check_is_unchanged(db_url: str, docs) -> None:
    short = vector_literal(HashEmbedder(32).embed(["apple"])[0])
    with _connect(db_url) as conn, pytest.raises(psycopg.errors.DataException) as info:
        conn.execute(SEARCH, ("docs", short, None, None))
    assert (info.value.diag.message_primary or "") == (
        "embedplat.search: the query vector has 32 dimensions, but collection 'docs' is "
        f"embedded with {MODEL} (64 dimensions); embed the query with that model"
    )


def test_a_model_of_another_dimension_gets_the_model_message(db_url: str, docs) -> None:
    """A switch between models of different dimensions: the message names both models."""
    other = HashEmbedder(32)
    short = vector_literal(other.embed(["apple"])[0])
    with _connect(db_url) as conn:
        for statement, args in [(SEARCH, ("docs", short)), (HYBRID, ("docs", "apple", short))]:
            with pytest.raises(psycopg.errors.DataException) as info:
                conn.execute(statement, (*args, other.name, other.fingerprint))
            message = info.value.diag.message_primary or ""
            assert f"embedded with {other.name} (fingerprint {other.fingerprint[:12]})" in message
            assert f"collection 'docs' is embedded with {MODEL}" in message
            assert "dimensions" not in message


def test_nothing_embedded_yet_and_text_only_have_nothing_to_compare(
    platform: Platform, db_url: str
) -> None:
    platform.create_collection("docs", model=MODEL)
    platform.ingest("docs", _rows(5))
    with _connect(db_url) as conn:
        # No vectors yet: no rows, whatever model the query names.
        assert conn.execute(SEARCH, ("docs", _query(), "salted-x-64", None)).fetchall() == []
    hash_sync(db_url)  # now embedded with test-hash-64
    with _connect(db_url) as conn:
        # Text only (no vector, or the vector list off): the model is not compared.
        assert conn.execute(HYBRID, ("docs", "apple", None, "salted-x-64", None)).fetchall()
        assert conn.execute(
            "SELECT id FROM embedplat.hybrid_search('docs', 'apple', %s::vector, 5, "
            "vector_weight => 0, query_model => 'salted-x-64')",
            (_query(),),
        ).fetchall()
