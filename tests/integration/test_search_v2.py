"""embedplat.search v2 and embedplat.similar: exact results, the filter language in SQL,
selective filters, index use, knobs that do not leak, hostile input, the v1 downgrade."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from embedplat.api import Platform
from embedplat.db import migrate
from embedplat.db.connection import libpq_url
from embedplat.db.vectors import vector_literal
from embedplat.errors import (
    CollectionNotFoundError,
    FilterError,
    InvalidInputError,
    RecordNotFoundError,
)
from embedplat.search import hybrid_search_vector, search_vector, similar_records
from tests.filter_oracle import matches
from tests.fix_embedders import HashEmbedder

from .real_corpus import MODEL, assert_same_ranking, exact_search, real_docs_collection
from .search_helpers import WORDS, hash_collection, hash_sync, plans, word_rows

# -- fixtures ----------------------------------------------------------------------------------


def _hash_metadata(i: int, rng: np.random.Generator) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "bucket": i % 100,
        "parity": i % 2,
        "tag": "rare" if i % 100 == 0 else "common",
        "year": 1990 + i % 40,
        "score": round(float(rng.uniform(0, 10)), 2),
        "lang": ["en", "fr", "de", "es"][i % 4],
        "tags": sorted({str(rng.choice(["x", "y", "z", "w"])) for _ in range(2)}),
        "author": {"name": f"a{i % 7}", "age": 20 + i % 50},
    }
    if i % 3 == 0:
        metadata["draft"] = i % 2 == 0
    if i % 5 == 0:
        metadata["note"] = None
    return metadata


def _hash_rows(n: int) -> list[dict[str, Any]]:
    return word_rows(n, seed=11, metadata=_hash_metadata)


@pytest.fixture
def hash_corpus(platform: Platform, db_url: str) -> list[dict[str, Any]]:
    rows = _hash_rows(1000)
    hash_collection(platform, db_url, rows)
    return rows


@pytest.fixture
def real_docs(
    platform: Platform, db_url: str
) -> tuple[list[tuple[str, str, int, dict[str, Any]]], np.ndarray]:
    """The real-text corpus embedded with the real model; its chunks and their exact vectors."""
    chunks, vectors = real_docs_collection(platform, db_url)
    assert sum(1 for c in chunks if c[0].startswith("long-")) >= 4  # multi-chunk records exist
    return chunks, vectors


def _q(platform: Platform, text: str) -> np.ndarray:
    return platform.embedder(MODEL).embed([text])[0]


# -- exact results with the real model -----------------------------------------------------------


QUERIES = [
    "how do I keep tomato plants healthy",
    "planets and stars in the night sky",
    "saving money for retirement",
    "a recipe for homemade sauce",
]


@pytest.mark.model
@pytest.mark.parametrize("per_record", [True, False])
def test_matches_exact_numpy_search(platform: Platform, real_docs, per_record: bool) -> None:
    chunks, vectors = real_docs
    for text in QUERIES:
        query = _q(platform, text)
        with platform.connection() as conn:
            hits = search_vector(conn, "docs", query, k=8, per_record=per_record, ef_search=400)
        want = exact_search(chunks, vectors, query, 8, per_record=per_record)
        assert_same_ranking([(h.id, h.score, h.chunk_ordinal or 0) for h in hits], want)
        if per_record:
            assert len({h.id for h in hits}) == len(hits)
        by_key = {(c[0], c[2]): c[1] for c in chunks}
        assert all(h.chunk == by_key[(h.id, h.chunk_ordinal)] for h in hits)


@pytest.mark.model
def test_per_chunk_returns_several_chunks_of_one_record(platform: Platform, real_docs) -> None:
    query = _q(platform, "tomatoes: growing them, cooking sauce, saving their seeds")
    with platform.connection() as conn:
        chunks = search_vector(conn, "docs", query, k=10, per_record=False, ef_search=400)
        records = search_vector(conn, "docs", query, k=10, ef_search=400)
    assert [h.id for h in chunks].count("long-garden-kitchen") >= 2
    assert [h.id for h in records].count("long-garden-kitchen") == 1
    first = next(h for h in chunks if h.id == "long-garden-kitchen")
    assert (
        first.char_start is not None
        and first.char_end is not None
        and first.char_end > first.char_start
    )


@pytest.mark.model
def test_min_similarity_keeps_exactly_the_hits_above_it(platform: Platform, real_docs) -> None:
    chunks, vectors = real_docs
    query = _q(platform, "galaxies, comets and the solar system")
    want_all = exact_search(chunks, vectors, query, 100)
    threshold = (want_all[3][1] + want_all[4][1]) / 2  # between the 4th and 5th record
    with platform.connection() as conn:
        hits = search_vector(conn, "docs", query, k=20, min_similarity=threshold, ef_search=400)
    assert_same_ranking([(h.id, h.score, h.chunk_ordinal or 0) for h in hits], want_all[:4])
    assert all(h.score >= threshold for h in hits)


@pytest.mark.model
def test_filtered_search_matches_exact_numpy(platform: Platform, real_docs) -> None:
    chunks, vectors = real_docs
    query = _q(platform, "something to eat tonight")
    for filter_ in (
        {"topic": "finance"},
        {"year": {"$gte": 2019}, "topic": {"$in": ["cooking", "gardening"]}},
        {"$or": [{"author.name": "author-1"}, {"tags": ["ast"]}]},
        {"$not": {"topic": {"$in": ["cooking", "mixed"]}}},
    ):
        with platform.connection() as conn:
            hits = search_vector(conn, "docs", query, k=5, filter=filter_, ef_search=400)
        want = exact_search(chunks, vectors, query, 5, keep=lambda m, f=filter_: matches(m, f))
        assert_same_ranking([(h.id, h.score, h.chunk_ordinal or 0) for h in hits], want)


@pytest.mark.model
def test_similar_matches_exact_numpy_centroid(platform: Platform, real_docs) -> None:
    chunks, vectors = real_docs
    for record in ("gardening-0", "astronomy-3", "long-space-money"):
        rows = [i for i, c in enumerate(chunks) if c[0] == record]
        centroid = vectors[rows].mean(axis=0)
        with platform.connection() as conn:
            hits = similar_records(conn, "docs", record, k=6, ef_search=400)
        want = exact_search(chunks, vectors, centroid, 6, exclude=record)
        assert_same_ranking([(h.id, h.score, h.chunk_ordinal or 0) for h in hits], want)
        assert record not in {h.id for h in hits}
    assert (
        platform.similar("docs", "gardening-0", k=3, filter={"topic": "cooking"})[0].metadata[
            "topic"
        ]
        == "cooking"
    )


def test_similar_errors(platform: Platform, hash_corpus) -> None:
    with pytest.raises(RecordNotFoundError, match="no record with id 'nope'"):
        platform.similar("docs", "nope")
    platform.ingest("docs", [{"id": "fresh", "text": "not synced yet"}])
    with pytest.raises(InvalidInputError, match="no vectors yet"):
        platform.similar("docs", "fresh")
    hits = platform.similar("docs", "r00001", k=5)
    assert len(hits) == 5 and "r00001" not in {h.id for h in hits}


# -- the filter language in SQL ------------------------------------------------------------------

FILTERS: list[dict[str, Any]] = [
    {},
    {"tag": "rare"},
    {"lang": "fr", "bucket": 1},
    {"tags": ["x"]},
    {"tags": ["x", "y"]},
    {"author": {"name": "a3"}},
    {"author.name": "a3"},
    {"author.age": {"$gte": 60}},
    {"year": {"$eq": 2000}},
    {"year": {"$ne": 2000}},
    {"year": {"$gt": 2025}},
    {"year": {"$gte": 2025, "$lt": 2027}},
    {"score": {"$lt": 0.5}},
    {"score": {"$lte": 0.5, "$gt": 0.1}},
    {"lang": {"$gte": "es"}},
    {"lang": {"$in": ["de", "es"]}},
    {"lang": {"$nin": ["de", "es"]}},
    {"tags": {"$in": ["w"]}},
    {"tags.0": "w"},
    {"draft": {"$exists": True}},
    {"draft": {"$exists": False}},
    {"draft": False},
    {"draft": {"$ne": True}},
    {"note": None},
    {"note": {"$exists": True}},
    {"$and": [{"lang": "en"}, {"year": {"$lt": 2000}}]},
    {"$or": [{"bucket": 3}, {"bucket": {"$in": [5, 7]}}]},
    {"$not": {"lang": {"$in": ["en", "fr", "de"]}}},
    {"$or": [{"$and": [{"lang": "en"}, {"draft": True}]}, {"author.age": 21}]},
    {"tag": "nope"},
    {"year": {"$gt": "2000"}},
    {"bucket": {"$in": []}},
]


def test_metadata_matches_agrees_with_the_oracle_on_every_operator(
    db_url: str, hash_corpus
) -> None:
    metadata = {r["id"]: r["metadata"] for r in hash_corpus}
    with psycopg.connect(libpq_url(db_url)) as conn:
        for filter_ in FILTERS:
            rows = conn.execute(
                "SELECT external_id FROM embedplat.records "
                "WHERE embedplat.metadata_matches(metadata, %s::jsonb)",
                (json.dumps(filter_),),
            ).fetchall()
            want = {rid for rid, m in metadata.items() if matches(m, filter_)}
            assert {r[0] for r in rows} == want, filter_


def test_search_returns_every_match_for_every_operator(platform: Platform, hash_corpus) -> None:
    """With k above the number of matches, a filtered search returns exactly the matches:
    every filter, also those matching most of the 1,000 records ($ne, $nin, $exists: false)."""
    metadata = {r["id"]: r["metadata"] for r in hash_corpus}
    query = HashEmbedder(64).embed(["apple cherry"])[0]
    sizes = []
    with platform.connection() as conn:
        for filter_ in FILTERS[1:]:
            want = {rid for rid, m in metadata.items() if matches(m, filter_)}
            sizes.append(len(want))
            hits = search_vector(conn, "docs", query, k=len(metadata), filter=filter_)
            assert {h.id for h in hits} == want, filter_
            assert all(matches(h.metadata, filter_) for h in hits)
    # Selective, broad and empty filters are all among them.
    assert min(sizes) == 0 and max(sizes) > 900 and any(0 < n < 50 for n in sizes)


_scalars = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["x", "y", "z", "xy"]),
    st.booleans(),
    st.none(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=5,
)
_keys = st.sampled_from(["a", "b", "c", "a.b", "b.a", "c.0", "a.b.a"])
_operator = st.one_of(
    st.tuples(st.sampled_from(["$eq", "$ne"]), _values),
    st.tuples(
        st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
        st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y", "xy"])),
    ),
    st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(_values, max_size=3)),
    st.tuples(st.just("$exists"), st.booleans()),
)
_clause = st.one_of(
    st.dictionaries(_keys, _values, min_size=1, max_size=2),
    st.builds(lambda k, ops: {k: dict(ops)}, _keys, st.lists(_operator, min_size=1, max_size=2)),
)
_filters = st.recursive(
    _clause,
    lambda inner: st.one_of(
        st.builds(lambda fs: {"$and": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda fs: {"$or": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda f: {"$not": f}, inner),
        st.builds(lambda a, b: {**a, **b}, inner, inner),
    ),
    max_leaves=4,
)
_metadata = st.dictionaries(st.sampled_from(["a", "b", "c"]), _values, max_size=3)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(metadata=_metadata, filter_=_filters)
def test_metadata_matches_agrees_with_the_oracle_on_random_metadata(
    db_url: str, metadata, filter_
) -> None:
    with psycopg.connect(libpq_url(db_url)) as conn:
        row = conn.execute(
            "SELECT embedplat.metadata_matches(%s::jsonb, %s::jsonb), "
            "embedplat.filter_is_containment(%s::jsonb) "
            "AND %s::jsonb @> %s::jsonb",
            (
                json.dumps(metadata),
                json.dumps(filter_),
                json.dumps(filter_),
                json.dumps(metadata),
                json.dumps(filter_),
            ),
        ).fetchone()
    assert row is not None
    assert row[0] is matches(metadata, filter_), (metadata, filter_)
    if row[1]:  # the containment fast path gives the same answer
        assert row[0] is True


def test_invalid_filters_are_refused_in_python_and_in_sql(
    platform: Platform, db_url: str, hash_corpus
) -> None:
    query = HashEmbedder(64).embed(["apple"])[0]
    with platform.connection() as conn, pytest.raises(FilterError, match=r"\$gte needs a number"):
        search_vector(conn, "docs", query, filter={"year": {"$gte": [1]}})
    with psycopg.connect(libpq_url(db_url)) as conn:
        for bad in (
            '{"$xor": []}',
            '{"a": {"$in": 1}}',
            '{"a..b": 1}',
            "[1]",
            '{"a": {"$gt": 1, "b": 2}}',  # operators mixed with a plain key
        ):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="embedplat filter"):
                conn.execute(
                    "SELECT * FROM embedplat.search('docs', %s::vector, 5, %s::jsonb)",
                    (vector_literal(query), bad),
                )
            conn.rollback()
        # Refused even when no row would ever be evaluated: the collection is empty.
        conn.execute(
            "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap) "
            "VALUES ('empty', 'test-hash-64', 100, 0)"
        )
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown operator"):
            conn.execute(
                "SELECT * FROM embedplat.search('empty', %s::vector, 5, %s::jsonb)",
                (vector_literal(query), '{"a": {"$like": "x"}}'),
            )


@pytest.fixture
def small_corpus(platform: Platform, db_url: str) -> list[dict[str, Any]]:
    rows = word_rows(40, seed=5, metadata=lambda i, rng: {"n": i})
    hash_collection(platform, db_url, rows)
    return rows


def _nested_not_text(levels: int) -> str:
    return '{"$not": ' * (levels - 1) + '{"n": 1}' + "}" * (levels - 1)


def test_deep_and_huge_filters_are_refused_in_sql(db_url: str, small_corpus) -> None:
    """5,000 nested $not ran the compiler out of stack; a $or of 20,000 branches took 35 s.
    Both are refused by every function taking a filter, with the filter's own error."""
    query = vector_literal(HashEmbedder(64).embed(["apple"])[0])
    huge = json.dumps({"$or": [{"n": i} for i in range(20_000)]})
    calls = [
        ("SELECT count(*) FROM embedplat.search('docs', %s::vector, 5, %s::jsonb)", (query,)),
        (
            "SELECT count(*) FROM embedplat.hybrid_search('docs', 'apple', %s::vector, 5, %s::jsonb)",
            (query,),
        ),
        ("SELECT count(*) FROM embedplat.similar('docs', 'r00001', 5, %s::jsonb)", ()),
        ("SELECT embedplat.metadata_matches('{}', %s::jsonb)", ()),
    ]
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        for statement, args in calls:
            for bad, message in (
                (_nested_not_text(5_000), "nested too deeply, limit 32 levels"),
                (_nested_not_text(33), "nested too deeply, limit 32 levels"),
                ('{"a": ' + "[" * 40 + "]" * 40 + "}", "nested too deeply"),
                (huge, "too large: more than 1000 nodes"),
            ):
                with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
                    conn.execute(statement, (*args, bad))
                primary = str(info.value.diag.message_primary)
                assert primary.startswith("embedplat filter: the filter is "), primary
                assert message in primary, (statement, primary)
            # The limits themselves are accepted, and the filter works.
            conn.execute(statement, (*args, _nested_not_text(32))).fetchall()
            conn.execute(
                statement, (*args, json.dumps({"$or": [{"n": i} for i in range(499)]}))
            ).fetchall()
        hits = conn.execute(
            "SELECT id FROM embedplat.search('docs', %s::vector, 40, %s::jsonb)",
            (query, json.dumps({"$or": [{"n": i} for i in range(0, 40, 2)][:499]})),
        ).fetchall()
        assert sorted(h[0] for h in hits) == [f"r{i:05d}" for i in range(0, 40, 2)]


def test_python_refuses_the_same_filters_before_any_query(platform: Platform, small_corpus) -> None:
    query = HashEmbedder(64).embed(["apple"])[0]
    with platform.connection() as conn:
        with pytest.raises(FilterError, match="nested too deeply"):
            search_vector(conn, "docs", query, filter=json.loads(_nested_not_text(33)))
        with pytest.raises(FilterError, match="too large"):
            search_vector(conn, "docs", query, filter={"$or": [{"n": i} for i in range(500)]})


def test_zero_query_vectors_are_refused_in_python_and_in_sql(
    platform: Platform, db_url: str, small_corpus
) -> None:
    """A zero vector has no direction: search returned every row with similarity NaN."""
    zero = np.zeros(64, dtype=np.float32)
    tiny = np.full(64, 1e-23, dtype=np.float32)  # its squares underflow pgvector's floats
    with platform.connection() as conn:
        for vector in (zero, tiny):
            with pytest.raises(InvalidInputError, match="all zeros"):
                search_vector(conn, "docs", vector)
            with pytest.raises(InvalidInputError, match="all zeros"):
                hybrid_search_vector(conn, "docs", "apple", vector)
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        for vector in (zero, tiny):
            for statement in (
                "SELECT * FROM embedplat.search('docs', %s::vector)",
                "SELECT * FROM embedplat.hybrid_search('docs', 'apple', %s::vector)",
            ):
                with pytest.raises(psycopg.errors.InvalidParameterValue, match="all zeros"):
                    conn.execute(statement, (vector_literal(vector),))
        # A small but measurable vector still works, and no similarity is NaN.
        small = np.full(64, 1e-6, dtype=np.float32)
        rows = conn.execute(
            "SELECT similarity FROM embedplat.search('docs', %s::vector, 5)",
            (vector_literal(small),),
        ).fetchall()
        assert len(rows) == 5 and all(not np.isnan(r[0]) for r in rows)
        # A record whose stored vectors are zero has no direction for similar either.
        conn.execute(
            "UPDATE embedplat.embeddings e SET embedding = %s::vector FROM embedplat.records r "
            "WHERE r.id = e.record_id AND r.external_id = 'r00003'",
            (vector_literal(zero),),
        )
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="average to zero"):
            conn.execute("SELECT * FROM embedplat.similar('docs', 'r00003')")
    with platform.connection() as conn, pytest.raises(InvalidInputError, match="average to zero"):
        similar_records(conn, "docs", "r00003")


# -- selective filters, index use, knobs -----------------------------------------------------------


def test_one_percent_filter_returns_k_rows_matching_exact(platform: Platform, hash_corpus) -> None:
    embedder = HashEmbedder(64)
    query = embedder.embed(["cherry delta"])[0]
    rare = [r for r in hash_corpus if r["metadata"]["tag"] == "rare"]  # 1 % of the rows
    sims = embedder.embed([r["text"] for r in rare]) @ query
    want = [rare[i]["id"] for i in np.argsort(-sims, kind="stable")[:5]]
    for filter_ in ({"tag": "rare"}, {"bucket": {"$eq": 0}}, {"tag": {"$in": ["rare"]}}):
        with platform.connection() as conn:
            hits = search_vector(conn, "docs", query, k=5, filter=filter_)
        assert len(hits) == 5
        assert [round(h.score, 5) for h in hits] == [
            round(float(s), 5) for s in sorted(sims, reverse=True)[:5]
        ]
        assert set(h.id for h in hits) <= {r["id"] for r in rare}
        assert hits[0].id == want[0] or abs(hits[0].score - hits[1].score) < 1e-6


def test_exact_fallback_when_the_index_scan_budget_runs_out(
    platform: Platform, hash_corpus
) -> None:
    """A filter far more selective than the scan budget still returns k rows (exact search)."""
    query = HashEmbedder(64).embed(["granite harbor"])[0]
    with platform.connection() as conn:
        conn.execute("SET hnsw.max_scan_tuples = 20")  # the index gives up after 20 tuples
        for filter_ in ({"tag": "rare"}, {"$and": [{"bucket": 0}, {"year": {"$gte": 1990}}]}):
            hits = search_vector(conn, "docs", query, k=8, filter=filter_)
            assert len(hits) == 8 and all(h.metadata["tag"] == "rare" for h in hits)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        conn.execute("RESET hnsw.max_scan_tuples")


def test_filter_matching_nothing(platform: Platform, hash_corpus) -> None:
    query = HashEmbedder(64).embed(["cherry"])[0]
    with platform.connection() as conn:
        for filter_ in ({"tag": "nope"}, {"year": {"$gt": 3000}}, {"$or": [{"x": 1}, {"y": 2}]}):
            assert search_vector(conn, "docs", query, k=5, filter=filter_) == []


@pytest.mark.parametrize(
    "filter_",
    [
        {},
        {"parity": 0},  # containment, but half of the records: the ANN scan
        {"year": {"$gte": 2000}},
        {"$or": [{"lang": "en"}, {"lang": "fr"}]},
    ],
)
def test_search_uses_the_hnsw_index(db_url: str, hash_corpus, filter_) -> None:
    query = vector_literal(HashEmbedder(64).embed(["apple"])[0])
    plan = plans(
        db_url,
        "SELECT * FROM embedplat.search('docs', %s::vector, 5, %s::jsonb)",
        (query, json.dumps(filter_)),
    )
    assert "Index Scan using ix_embeddings_ann_c1_m1" in plan, plan


@pytest.mark.parametrize("filter_", [{"tag": "rare"}, {"lang": "en", "year": {"$gt": 2020}}])
def test_selective_plain_values_use_the_gin_index_and_an_exact_scan(
    platform: Platform, db_url: str, hash_corpus, filter_
) -> None:
    embedder = HashEmbedder(64)
    query = embedder.embed(["apple kettle"])[0]
    # 30,000 more records that match neither filter (not embedded: only the plan matters), so
    # that the records table is large enough for an index to beat a scan of it.
    platform.ingest(
        "docs",
        (
            {"id": f"x{i:05d}", "text": "filler", "metadata": {"tag": "common", "lang": "de"}}
            for i in range(30_000)
        ),
    )
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute("ANALYZE embedplat.records")
    plan = plans(
        db_url,
        "SELECT * FROM embedplat.search('docs', %s::vector, 5, %s::jsonb)",
        (vector_literal(query), json.dumps(filter_)),
    )
    assert "Bitmap Index Scan on ix_records_metadata" in plan, plan
    assert "ix_embeddings_ann_c1_m1" not in plan, plan
    kept = [r for r in hash_corpus if matches(r["metadata"], filter_)]
    sims = embedder.embed([r["text"] for r in kept]) @ query
    with platform.connection() as conn:
        hits = search_vector(conn, "docs", query, k=5, filter=filter_)
    assert [round(h.score, 5) for h in hits] == [
        round(float(s), 5) for s in sorted(sims, reverse=True)[:5]
    ]


def test_similar_uses_the_hnsw_index(db_url: str, hash_corpus) -> None:
    plan = plans(db_url, "SELECT * FROM embedplat.similar('docs', 'r00007', 5)", ())
    assert "Index Scan using ix_embeddings_ann_c1_m1" in plan, plan


KNOBS = ("hnsw.iterative_scan", "hnsw.ef_search", "ivfflat.iterative_scan", "ivfflat.probes")


def _knobs(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return {
        name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]  # type: ignore[index]
        for name in KNOBS
    }


def test_knobs_do_not_leak_within_the_transaction_or_on_a_pooled_connection(
    db_url: str, hash_corpus
) -> None:
    query = HashEmbedder(64).embed(["apple"])[0]
    with ConnectionPool(libpq_url(db_url), min_size=1, max_size=1, open=True) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT '[1]'::vector")  # load pgvector so its settings exist
            before = _knobs(conn)
            assert before["hnsw.iterative_scan"] == "off"
            search_vector(conn, "docs", query, k=3, ef_search=123, probes=7)
            assert _knobs(conn) == before  # same transaction: already put back
            conn.execute(
                "SELECT count(*) FROM embedplat.hybrid_search('docs', 'apple', NULL, 3, ef_search => 99)"
            )
            conn.execute(
                "SELECT count(*) FROM embedplat.similar('docs', 'r00003', 3, ef_search => 77)"
            )
            assert _knobs(conn) == before
        with pool.connection() as conn:  # the same connection, next user
            assert _knobs(conn) == before
        with pool.connection() as conn:
            # A caller's own session setting is honoured and survives the call.
            conn.execute("SET hnsw.ef_search = 250")
            search_vector(conn, "docs", query, k=3, ef_search=40)
            assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("250",)
            conn.execute("RESET hnsw.ef_search")


def test_knob_arguments_are_checked(platform: Platform, db_url: str, hash_corpus) -> None:
    query = HashEmbedder(64).embed(["apple"])[0]
    with platform.connection() as conn, pytest.raises(InvalidInputError, match="ef_search"):
        search_vector(conn, "docs", query, ef_search=0)
    with (
        psycopg.connect(libpq_url(db_url)) as conn,
        pytest.raises(psycopg.errors.InvalidParameterValue, match="probes must be"),
    ):
        conn.execute(
            "SELECT * FROM embedplat.search('docs', %s::vector, probes => 0)",
            (vector_literal(query),),
        )


# -- hostile input ------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "a'; DROP TABLE embedplat.records; --",
    'quo"te %s %% $1',
    "ünïcødé 🚀 名前",
    "x\\y",
]


def test_hostile_collection_names_and_filter_keys_are_harmless(
    platform: Platform, db_url: str
) -> None:
    keys = ["we'ird; key%", 'dq"k', "ключ", "%s", "x$1", "a\\b", "); DROP TABLE x; --"]
    for name in HOSTILE_NAMES:
        platform.create_collection(name, model="test-hash-64")
        platform.ingest(
            name,
            [
                {
                    "id": f"{name}-{i}",
                    "text": f"apple banana {WORDS[i % 12]}",
                    "metadata": {key: i for key in keys},
                }
                for i in range(30)
            ],
        )
        hash_sync(db_url, name)
    query = HashEmbedder(64).embed(["apple banana"])[0]
    with platform.connection() as conn:
        for name in HOSTILE_NAMES:
            assert len(search_vector(conn, name, query, k=5)) == 5
            for key in keys:
                hits = search_vector(conn, name, query, k=30, filter={key: {"$lt": 3}})
                assert sorted(h.metadata[key] for h in hits) == [0, 1, 2]
                assert all(h.id.startswith(name) for h in hits)
                assert len(search_vector(conn, name, query, k=30, filter={key: 7})) == 1
            assert len(similar_records(conn, name, f"{name}-3", k=4)) == 4
    with pytest.raises(CollectionNotFoundError, match="no collection named"):
        platform.search("nope'; SELECT 1; --", query)
    with psycopg.connect(libpq_url(db_url)) as conn:
        assert conn.execute("SELECT count(*) FROM embedplat.records").fetchone() == (120,)


# -- the migration -------------------------------------------------------------------------------


def test_downgrade_restores_search_v1(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    migrate.downgrade(empty_db_url, "0003")

    def signature() -> tuple[int, int]:
        with psycopg.connect(libpq_url(empty_db_url)) as conn:
            row = conn.execute(
                "SELECT p.pronargs, (SELECT count(*) FROM pg_attribute a "
                "  JOIN pg_type t ON t.typrelid = a.attrelid "
                "  WHERE t.typname = 'search_hit' AND a.attnum > 0) "
                "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'embedplat' AND p.proname = 'search'"
            ).fetchall()
        assert len(row) == 1
        return int(row[0][0]), int(row[0][1])

    assert signature() == (4, 4)
    with psycopg.connect(libpq_url(empty_db_url)) as conn:
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'embedplat' AND table_name = 'chunks'"
            ).fetchall()
        }
    assert "content_tsv" not in columns
    migrate.upgrade(empty_db_url)
    assert signature() == (10, 7)  # search.v5.sql: query_model, query_fingerprint


# -- concurrency smoke: searches from several threads share nothing ----------------------------


def test_concurrent_searches_with_different_knobs(platform: Platform, hash_corpus) -> None:
    query = HashEmbedder(64).embed(["lemon kettle"])[0]
    errors: list[BaseException] = []

    def worker(ef: int) -> None:
        try:
            for _ in range(10):
                with platform.connection() as conn:
                    assert len(search_vector(conn, "docs", query, k=7, ef_search=ef)) == 7
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(ef,)) for ef in (10, 40, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_exact_path_reads_only_the_matching_records_vectors_before_any_analyze(
    platform: Platform, db_url: str
) -> None:
    # A collection just loaded, before autovacuum ever analyzed its tables: the exact path of a
    # selective filter once read every vector of the model per matching record (search.v4.sql).
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        for table in ("records", "chunks", "embeddings"):
            conn.execute(f"ALTER TABLE embedplat.{table} SET (autovacuum_enabled = false)")
    platform.create_collection("docs", model="test-hash-64")
    platform.ingest(
        "docs",
        [
            {
                "id": f"d{i}",
                "text": " ".join(WORDS[(i * j) % len(WORDS)] for j in range(450)),
                "metadata": {"a": i % 25},
            }
            for i in range(1000)
        ],
    )
    hash_sync(db_url)
    query = vector_literal(HashEmbedder(64).embed(["anything"])[0])
    with psycopg.connect(libpq_url(db_url)) as conn:
        analyzed = conn.execute(
            "SELECT count(*) FROM pg_stat_user_tables WHERE schemaname = 'embedplat' "
            "AND relname IN ('records', 'chunks', 'embeddings') "
            "AND coalesce(last_analyze, last_autoanalyze) IS NOT NULL"
        ).fetchone()
        assert analyzed == (0,)  # the case under test: no statistics yet
        row = conn.execute(
            "SELECT count(*) FROM embedplat.chunks ch JOIN embedplat.records r "
            "ON r.id = ch.record_id WHERE r.metadata @> '{\"a\": 3}'"
        ).fetchone()
        assert row is not None
        matching_chunks = int(row[0])
        assert 40 <= matching_chunks <= 400
        fetched = "SELECT pg_stat_get_xact_tuples_fetched('embedplat.embeddings'::regclass)"
        before = conn.execute(fetched).fetchone()
        hits = conn.execute(
            "SELECT id FROM embedplat.search('docs', %s::vector, 10, '{\"a\": 3}'::jsonb)",
            (query,),
        ).fetchall()
        after = conn.execute(fetched).fetchone()
    assert before is not None and after is not None
    assert len(hits) == 10
    # The 40 matching records' vectors (a few chunks each), not all 1,000 records' per match.
    assert after[0] - before[0] <= 2 * matching_chunks
