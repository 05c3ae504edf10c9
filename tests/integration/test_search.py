"""embedplat.search: exact results, index use, filters that still return k rows, wrong vectors."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.db.vectors import vector_literal
from embedplat.errors import ModelMismatchError
from embedplat.search import search_vector
from tests.fix_embedders import HashEmbedder

from .search_helpers import hash_collection, hash_sync, plans, word_rows


def _corpus(n: int) -> list[dict[str, object]]:
    return word_rows(
        n,
        seed=7,
        id_digits=4,
        metadata=lambda i, rng: {
            "bucket": i % 100,
            "even": i % 2 == 0,
            "tag": "rare" if i % 100 == 0 else "common",
        },
    )


@pytest.fixture
def corpus(platform: Platform, db_url: str) -> list[dict[str, object]]:
    rows = _corpus(1000)
    hash_collection(platform, db_url, rows)
    return rows


def _similarities(rows: list[dict[str, object]], query: np.ndarray) -> dict[str, float]:
    """Every record's exact cosine similarity to ``query`` (one chunk per record here)."""
    vectors = HashEmbedder(64).embed([str(r["text"]) for r in rows])
    return {str(r["id"]): float(s) for r, s in zip(rows, vectors @ query, strict=True)}


def _assert_exact_top_k(hits, sims: dict[str, float], k: int) -> None:
    """``hits`` are an exact top ``k`` of ``sims`` in order: their scores are the ``k`` best
    similarities, best first, and each hit's score is its own record's similarity. (Records
    of equal similarity may come in either order, hence no comparison of id lists.)"""
    best = sorted(sims.values(), reverse=True)[:k]
    assert [round(h.score, 4) for h in hits] == [round(s, 4) for s in best]
    assert len({h.id for h in hits}) == len(hits) == k
    for hit in hits:
        assert abs(hit.score - sims[hit.id]) < 1e-4, hit.id


def test_results_match_exact_numpy_search(platform: Platform, db_url: str, corpus) -> None:
    query = HashEmbedder(64).embed(["apple banana harbor"])[0]
    with platform.connection() as conn:
        conn.execute("SET hnsw.ef_search = 400")  # small set: make the ANN scan exhaustive
        hits = search_vector(conn, "docs", query, k=10)
    _assert_exact_top_k(hits, _similarities(corpus, query), 10)


def test_search_uses_the_hnsw_index(platform: Platform, db_url: str, corpus) -> None:
    query = vector_literal(HashEmbedder(64).embed(["apple"])[0])
    plan = plans(
        db_url, "SELECT * FROM embedplat.search('docs', %s::vector, 5, '{}'::jsonb)", (query,)
    )
    assert "Index Scan using ix_embeddings_ann_c1_m1" in plan, plan
    assert "Seq Scan on embeddings" not in plan, plan


@pytest.mark.parametrize(
    ("filter_", "keep"),
    [
        ({"tag": "rare"}, lambda r: r["metadata"]["tag"] == "rare"),  # 1 % of rows
        ({"even": True}, lambda r: r["metadata"]["even"]),
        ({"bucket": 37}, lambda r: r["metadata"]["bucket"] == 37),
    ],
)
def test_filtered_search_returns_k_rows_when_k_match(
    platform: Platform, corpus, filter_, keep
) -> None:
    matching = [r for r in corpus if keep(r)]
    k = min(10, len(matching))
    query = HashEmbedder(64).embed(["cherry delta"])[0]
    with platform.connection() as conn:
        hits = search_vector(conn, "docs", query, k=k, filter=filter_)
    assert len(hits) == k
    assert all(keep({"metadata": h.metadata}) for h in hits)


def test_filter_matching_nothing_returns_no_rows(platform: Platform, corpus) -> None:
    query = HashEmbedder(64).embed(["cherry"])[0]
    with platform.connection() as conn:
        assert search_vector(conn, "docs", query, k=5, filter={"tag": "nope"}) == []


def test_one_row_per_record_with_its_best_chunk(platform: Platform, db_url: str) -> None:
    platform.create_collection("docs", model="test-hash-64", chunk_tokens=12, chunk_overlap=0)
    long_text = "\n\n".join(f"apple banana paragraph {i} " + "filler " * 8 for i in range(6))
    platform.ingest(
        "docs", [{"id": "long", "text": long_text}, {"id": "other", "text": "granite harbor"}]
    )
    hash_sync(db_url)
    query = HashEmbedder(64).embed(["apple banana paragraph 3"])[0]
    with platform.connection() as conn:
        hits = search_vector(conn, "docs", query, k=5)
    assert [h.id for h in hits].count("long") == 1
    assert "paragraph 3" in hits[0].chunk and hits[0].id == "long"


def test_wrong_dimension_vector_fails_clearly(platform: Platform, corpus) -> None:
    with platform.connection() as conn, pytest.raises(ModelMismatchError, match="64"):
        search_vector(conn, "docs", np.ones(32, dtype=np.float32), k=5)


def test_query_from_another_model_is_refused(platform: Platform, corpus) -> None:
    other = HashEmbedder(32)
    query = other.embed(["apple"])[0]
    with (
        platform.connection() as conn,
        pytest.raises(ModelMismatchError, match=r"test-hash-32 .*, but collection 'docs' is "),
    ):
        search_vector(
            conn, "docs", query, k=5, query_model=other.name, query_fingerprint=other.fingerprint
        )


def test_search_of_unknown_collection(platform: Platform, corpus) -> None:
    from embedplat.errors import CollectionNotFoundError

    with platform.connection() as conn, pytest.raises(CollectionNotFoundError):
        search_vector(conn, "nope'; DROP TABLE x; --", np.ones(64), k=5)


def test_search_setting_does_not_leak_to_the_connection(platform: Platform, corpus) -> None:
    query = HashEmbedder(64).embed(["apple"])[0]
    with platform.connection() as conn:
        search_vector(conn, "docs", query, k=3)
        conn.commit()
        value = conn.execute("SELECT current_setting('hnsw.iterative_scan', true)").fetchone()
    assert value is not None and value[0] in (None, "", "off")


def test_sql_search_directly(db_url: str, corpus) -> None:
    embedder = HashEmbedder(64)
    query = embedder.embed(["island jungle"])[0]
    with psycopg.connect(libpq_url(db_url)) as conn:
        rows = conn.execute(
            "SELECT id, similarity, metadata FROM embedplat.search('docs', %s::vector, 3, %s::jsonb)",
            (vector_literal(query), json.dumps({"even": False})),
        ).fetchall()
    # The filter is applied: the three best among the odd records only.
    odd = [r for r in corpus if not r["metadata"]["even"]]  # type: ignore[index]
    assert len(rows) == 3 and all(r[2]["even"] is False for r in rows)
    sims = _similarities(odd, query)
    best = sorted(sims.values(), reverse=True)[:3]
    assert [round(r[1], 4) for r in rows] == [round(s, 4) for s in best]
    assert all(abs(r[1] - sims[r[0]]) < 1e-4 for r in rows)
    assert max(_similarities(corpus, query).values()) > best[0]  # an even record was closer
