"""Search calls carry the model of their query vector (search.v5.sql, migration 0015):
embedplat.search / hybrid_search refuse a vector of another model than the collection's active
one, naming both; Platform passes its embedder's identity and, when the collection's model was
swapped between embedding the query and searching, embeds the query again with the new model
and retries once."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.db.vectors import vector_literal
from embedplat.embedders import Embedder
from embedplat.errors import ModelMismatchError
from embedplat.search import HybridHit, hybrid_search_vector, search_vector
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


# -- Python ------------------------------------------------------------------------------------


def test_python_helpers_pass_the_model(platform: Platform, db_url: str, docs) -> None:
    import sqlalchemy
    from sqlalchemy import create_engine, select

    from embedplat.db.connection import sqlalchemy_url
    from embedplat.orm import hybrid_search_fn, search_fn

    query = HashEmbedder(64).embed(["apple banana harbor"])[0]
    other = SaltedEmbedder(64, "x")
    with platform.connection() as conn:
        plain = search_vector(conn, "docs", query, k=5)
        assert search_vector(conn, "docs", query, k=5, query_model=MODEL) == plain
        hybrid = hybrid_search_vector(conn, "docs", "apple", query, k=5)
        assert (
            hybrid_search_vector(
                conn, "docs", "apple", query, k=5, query_model=MODEL, query_fingerprint=FINGERPRINT
            )
            == hybrid
        )
    for call in (
        lambda conn: search_vector(conn, "docs", query, k=5, query_model=other.name),
        lambda conn: hybrid_search_vector(
            conn, "docs", "apple", query, k=5, query_fingerprint=other.fingerprint
        ),
    ):
        with platform.connection() as conn, pytest.raises(ModelMismatchError) as info:
            call(conn)
        assert f"collection 'docs' is embedded with {MODEL} (fingerprint " in str(info.value)

    engine = create_engine(sqlalchemy_url(db_url))
    try:
        with engine.connect() as conn:
            hits = search_fn("docs", query, 5, query_model=MODEL, query_fingerprint=FINGERPRINT)
            assert [r.id for r in conn.execute(select(hits.c.id))] == [h.id for h in plain]
            for selectable in (
                search_fn("docs", query, 5, query_model=other.name),
                hybrid_search_fn("docs", "apple", query, 5, query_model=other.name),
            ):
                with pytest.raises(sqlalchemy.exc.DBAPIError, match=f"embedded with {other.name}"):
                    conn.execute(select(selectable.c.id))
                conn.rollback()
    finally:
        engine.dispose()


def _embed_then_switch(
    monkeypatch: pytest.MonkeyPatch, platform: Platform, db_url: str, targets: list[SaltedEmbedder]
) -> dict[str, HashEmbedder]:
    """``platform.embedder`` serves test-hash-64 and ``targets``' models, one counting instance
    each; every time one of them has embedded a query while targets remain, the collection is
    switched to the next target (its vectors computed by the target itself, so they are not
    counted): the swap lands between embedding the query and searching with it."""
    embedders: dict[str, HashEmbedder] = {MODEL: HashEmbedder(64)}
    for target in targets:
        embedders[target.name] = SaltedEmbedder(target.dimensions, target.salt)
    queue = list(targets)
    for embedder in embedders.values():

        def embed(texts: Sequence[str], inner: Callable[..., np.ndarray] = embedder.embed) -> Any:
            vectors = inner(texts)
            if queue:
                _switch(db_url, queue.pop(0))
            return vectors

        monkeypatch.setattr(embedder, "embed", embed)
    monkeypatch.setattr(platform, "embedder", lambda name: embedders[name])
    return embedders


def _top(rows: list[dict[str, Any]], docs_model: Embedder, query_vector: np.ndarray) -> list[float]:
    vectors = docs_model.embed([str(r["text"]) for r in rows])
    return [round(float(s), 4) for s in sorted(vectors @ query_vector, reverse=True)[:5]]


SEARCHES: dict[str, Callable[[Platform, list[str]], list[list[Any]]]] = {
    "search": lambda p, q: [p.search("docs", q[0], k=5)],
    "search_many": lambda p, q: p.search_many("docs", q, k=5),
    "hybrid_search": lambda p, q: [p.hybrid_search("docs", q[0], k=5, text_weight=0)],
    "search hybrid=True": lambda p, q: [p.search("docs", q[0], k=5, hybrid=True, text_weight=0)],
}


@pytest.mark.parametrize("call", list(SEARCHES))
def test_a_swap_between_embedding_and_search_is_retried_with_the_new_model(
    platform: Platform, db_url: str, docs, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    new = SaltedEmbedder(64, "b")
    embedders = _embed_then_switch(monkeypatch, platform, db_url, [new])
    queries = ["apple banana harbor", "kettle lemon"] if call == "search_many" else ["apple"]

    results = SEARCHES[call](platform, queries)

    # Embedded once with the old model, then (after the refusal) once with the new one.
    assert (embedders[MODEL].calls, embedders[new.name].calls) == (1, 1)
    assert embedders[new.name].texts_embedded == len(queries)
    assert len(results) == len(queries)
    for text, hits in zip(queries, results, strict=True):
        got = [round(h.similarity if isinstance(h, HybridHit) else h.score, 4) for h in hits]
        # The new model's vectors searched with the new model's query ...
        assert got == _top(docs, new, new.embed([text])[0])
        # ... which is not what the old model's query would have found among them.
        assert got != _top(docs, new, HashEmbedder(64).embed([text])[0])


def test_two_swaps_in_a_row_raise(
    platform: Platform, db_url: str, docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    second, third = SaltedEmbedder(64, "b"), SaltedEmbedder(64, "c")
    embedders = _embed_then_switch(monkeypatch, platform, db_url, [second, third])
    with pytest.raises(ModelMismatchError) as info:
        platform.search("docs", "apple banana", k=5)
    assert (
        f"embedded with {second.name} (fingerprint {second.fingerprint[:12]}), but collection "
        f"'docs' is embedded with {third.name} (fingerprint {third.fingerprint[:12]})"
    ) in str(info.value)
    assert [e.calls for e in embedders.values()] == [1, 1, 0]


class OtherFilesEmbedder(HashEmbedder):
    """test-hash-64 by name, but with another fingerprint: the model's files differ from those
    the collection's vectors came from."""

    @property
    def fingerprint(self) -> str:
        return "f" * 64


def test_a_model_whose_files_changed_is_refused_without_a_retry(
    platform: Platform, db_url: str, docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed = OtherFilesEmbedder(64)
    monkeypatch.setattr(platform, "embedder", lambda name: changed)
    for search in (
        lambda: platform.search("docs", "apple", k=5),
        lambda: platform.hybrid_search("docs", "apple", k=5),
    ):
        calls = changed.calls
        with pytest.raises(ModelMismatchError) as info:
            search()
        assert str(info.value).endswith(
            f"the query vector was embedded with {MODEL} (fingerprint ffffffffffff), but "
            f"collection 'docs' is embedded with {MODEL} (fingerprint {FINGERPRINT[:12]}); "
            "embed the query with that model"
        )
        assert changed.calls == calls + 1  # embedding again would give the same vectors


def test_nothing_embedded_yet_searches_without_error(platform: Platform) -> None:
    platform.create_collection("docs", model=MODEL)
    platform.ingest("docs", [{"id": "a", "text": "apple banana"}, {"id": "b", "text": "kettle"}])
    # Not even chunked yet: nothing to find, nothing to compare the query's model with.
    assert platform.search("docs", "apple", k=5) == []
    assert platform.hybrid_search("docs", "apple", k=5) == []
    assert platform.search_many("docs", ["apple", "kettle"], k=5) == [[], []]
