"""embedplat.hybrid_search: reciprocal rank fusion of full-text and vector ranks, checked
against a fusion computed in Python from exact vector ranks and an independent text ranking
(BM25 for plain words, ts_rank_cd for web-search syntax); weights, filters, web-search syntax,
IDF, the tsvector column and its GIN index, CLI and Python."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.db.vectors import vector_literal
from embedplat.errors import InvalidInputError
from embedplat.search import HybridHit, hybrid_search_vector, search_vector
from tests.filter_oracle import matches
from tests.fix_cli import _env, run
from tests.fix_embedders import HashEmbedder

from .real_corpus import MODEL, exact_search, real_docs_collection
from .search_helpers import hash_collection, plans


@pytest.fixture
def real_docs(platform: Platform, db_url: str):
    return real_docs_collection(platform, db_url)


def _text_ranking(db_url: str, tsquery_text: str, filter_sql: str = "true") -> list[str]:
    """Records by their best chunk's ts_rank_cd for an explicit to_tsquery (ties: record id)."""
    with psycopg.connect(libpq_url(db_url)) as conn:
        rows = conn.execute(
            f"""
            SELECT b.external_id FROM (
                SELECT DISTINCT ON (r.id) r.id, r.external_id,
                       ts_rank_cd(to_tsvector('english', ch.content), q) AS s
                FROM embedplat.chunks ch JOIN embedplat.records r ON r.id = ch.record_id,
                     to_tsquery('english', %s) q
                WHERE to_tsvector('english', ch.content) @@ q AND {filter_sql}
                ORDER BY r.id, s DESC
            ) b ORDER BY b.s DESC, b.id
            """,
            (tsquery_text,),
        ).fetchall()
    return [r[0] for r in rows]


def _bm25_scores(db_url: str, words: str) -> dict[str, tuple[float, int]]:
    """Each matching record's best-chunk BM25 score for the lexemes of ``words``, computed here
    from the chunks' tsvectors (k1 1.2, b 0.75; N and df over the collection's chunks; dl = the
    chunk's distinct lexemes, avgdl = their mean over the chunks matching any word), with the
    record's internal id (the tie-break). Every word here is rare enough to find candidates."""
    with psycopg.connect(libpq_url(db_url)) as conn:
        lexemes = {
            r[0]
            for r in conn.execute(
                "SELECT lexeme FROM unnest(to_tsvector('english', %s))", (words,)
            ).fetchall()
        }
        rows = conn.execute(
            """
            SELECT r.id, r.external_id, ch.ordinal, length(ch.content_tsv),
                   array_agg(u.lexeme), array_agg(cardinality(u.positions))
            FROM embedplat.chunks ch JOIN embedplat.records r ON r.id = ch.record_id
                 CROSS JOIN unnest(ch.content_tsv) u
            GROUP BY ch.id, r.id
            """
        ).fetchall()
    n = len(rows)
    tfs = [dict(zip(lex, tf, strict=True)) for *_, lex, tf in rows]
    df = {word: sum(word in tf for tf in tfs) for word in lexemes}
    assert all(d < 500 for d in df.values())
    matching = [(row, tf) for row, tf in zip(rows, tfs, strict=True) if lexemes & set(tf)]
    if not matching:
        return {}
    avgdl = sum(row[3] for row, _ in matching) / len(matching)
    best: dict[str, tuple[float, int, int]] = {}
    for (rid, ext, ordinal, dl, *_), tf in matching:
        score = sum(
            math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
            * tf[w]
            * 2.2
            / (tf[w] + 1.2 * (0.25 + 0.75 * dl / avgdl))
            for w in lexemes
            if w in tf
        )
        score = float(np.float32(score))  # text_score is a real
        if ext not in best or (-score, ordinal) < (-best[ext][0], best[ext][2]):
            best[ext] = (score, rid, ordinal)
    return {ext: (score, rid) for ext, (score, rid, _) in best.items()}


def _bm25_ranking(db_url: str, words: str) -> list[str]:
    """Records by their best chunk's BM25 score (see :func:`_bm25_scores`); ties: record id."""
    scores = _bm25_scores(db_url, words)
    return sorted(scores, key=lambda ext: (-scores[ext][0], scores[ext][1]))


def _rrf(
    vector_ids: list[str], text_ids: list[str], k: int, wv: float = 1, wt: float = 1, c: int = 60
):
    vrank = {rid: n + 1 for n, rid in enumerate(vector_ids)}
    trank = {rid: n + 1 for n, rid in enumerate(text_ids)}
    scores = []
    for rid in set(vrank) | set(trank):
        score = (wv / (c + vrank[rid]) if rid in vrank else 0.0) + (
            wt / (c + trank[rid]) if rid in trank else 0.0
        )
        scores.append((-score, vrank.get(rid, 1 << 30), trank.get(rid, 1 << 30), rid))
    scores.sort()
    return [
        (s[3], -s[0], s[1] if s[1] < 1 << 30 else None, s[2] if s[2] < 1 << 30 else None)
        for s in scores[:k]
    ]


@pytest.mark.model
@pytest.mark.parametrize(
    ("query", "tsquery", "weights"),
    [
        # Plain words: BM25 (tsquery None).
        ("tomato sauce with basil", None, (1.0, 1.0)),
        ("interest rates and bonds", None, (1.0, 1.0)),
        ("the Sun and the Moon", None, (0.5, 2.0)),
        # Web-search syntax: ts_rank_cd of the tsquery.
        ('"tomato sauce" or basil', "tomato <-> sauce | basil", (1.0, 1.0)),
    ],
)
def test_fusion_matches_python_rrf_over_exact_ranks(
    platform: Platform, db_url: str, real_docs, query: str, tsquery: str | None, weights
) -> None:
    chunks, vectors = real_docs
    vector = platform.embedder(MODEL).embed([query])[0]
    k = 8
    depth = max(4 * k, 60)
    vector_ids = [h[0] for h in exact_search(chunks, vectors, vector, depth)]
    ranking = _bm25_ranking(db_url, query) if tsquery is None else _text_ranking(db_url, tsquery)
    text_ids = ranking[:depth]
    assert text_ids, "the query should match some text"
    want = _rrf(vector_ids, text_ids, k, *weights)
    with platform.connection() as conn:
        conn.execute("SET hnsw.ef_search = 400")
        hits = hybrid_search_vector(
            conn, "docs", query, vector, k=k, vector_weight=weights[0], text_weight=weights[1]
        )
    assert [(h.id, round(h.score, 9), h.vector_rank, h.text_rank) for h in hits] == [
        (rid, round(score, 9), vr, tr) for rid, score, vr, tr in want
    ]
    for hit in hits:
        assert isinstance(hit, HybridHit)
        assert (hit.similarity is None) == (hit.vector_rank is None)
        assert (hit.text_score is None) == (hit.text_rank is None)


@pytest.mark.model
def test_weights_reduce_to_either_list(platform: Platform, db_url: str, real_docs) -> None:
    query = "saving money with compound interest"
    vector = platform.embedder(MODEL).embed([query])[0]
    with platform.connection() as conn:
        vector_only = search_vector(conn, "docs", vector, k=6, ef_search=400)
        conn.execute("SET hnsw.ef_search = 400")
        no_text = hybrid_search_vector(conn, "docs", query, vector, k=6, text_weight=0)
        no_vector = hybrid_search_vector(conn, "docs", query, vector, k=6, vector_weight=0)
    assert [h.id for h in no_text] == [h.id for h in vector_only]
    assert all(h.text_rank is None for h in no_text)
    want = _bm25_scores(db_url, query)
    assert [h.id for h in no_vector] == _bm25_ranking(db_url, query)[:6]
    assert all(h.vector_rank is None for h in no_vector)
    for hit in no_vector:  # text_score is the BM25 score
        assert hit.text_score == pytest.approx(want[hit.id][0], rel=1e-5)


@pytest.mark.model
def test_hybrid_lifts_a_record_that_only_matches_by_keyword(platform: Platform, real_docs) -> None:
    platform.ingest(
        "docs",
        [{"id": "manual", "text": "Model QX-9 dehumidifier: replace the filter cartridge yearly."}],
    )
    platform.sync("docs")
    query = "QX-9"
    hybrid = platform.search("docs", query, k=3, hybrid=True)
    assert hybrid[0].id == "manual"
    assert isinstance(hybrid[0], HybridHit) and hybrid[0].text_rank == 1


# -- with the test embedder ---------------------------------------------------------------------


def _hash_docs(platform: Platform, db_url: str) -> None:
    rows = [
        {"id": "p1", "text": "tomato sauce with fresh basil", "metadata": {"lang": "en", "n": 1}},
        {"id": "p2", "text": "tomato soup without basil", "metadata": {"lang": "en", "n": 2}},
        {"id": "p3", "text": "sauce for pasta, tomato based", "metadata": {"lang": "fr", "n": 3}},
        {"id": "p4", "text": "grilled fish and lemons", "metadata": {"lang": "en", "n": 4}},
        {"id": "p5", "text": "the and of", "metadata": {"lang": "de", "n": 5}},
    ] + [
        {
            "id": f"f{i}",
            "text": f"filler words number {i} about harbors",
            "metadata": {"lang": "en", "n": 10 + i},
        }
        for i in range(40)
    ]
    hash_collection(platform, db_url, rows)


def test_web_search_syntax_and_plain_words(platform: Platform, db_url: str) -> None:
    _hash_docs(platform, db_url)
    vector = HashEmbedder(64).embed(["tomato"])[0]
    with platform.connection() as conn:

        def text_hits(q: str) -> set[str]:
            hits = hybrid_search_vector(conn, "docs", q, vector, k=50, vector_weight=0)
            return {h.id for h in hits}

        assert text_hits("tomato basil") == {"p1", "p2", "p3"}  # plain words: any of them
        assert text_hits('"tomato sauce"') == {"p1"}  # a phrase
        assert text_hits("tomato -basil") == {"p3"}  # an exclusion
        assert text_hits("lemons or soup") == {"p2", "p4"}
        assert text_hits("the of and") == set()  # only stop words
        # Only stop words: the vector list alone.
        hits = hybrid_search_vector(conn, "docs", "the of", vector, k=3)
        assert len(hits) == 3 and all(h.text_rank is None for h in hits)
        # No vector: the text list alone.
        hits = hybrid_search_vector(conn, "docs", "tomato sauce", None, k=3)
        assert [h.id for h in hits][:1] == ["p1"] and all(h.vector_rank is None for h in hits)


def test_stop_word_queries_send_no_notice(platform: Platform, db_url: str) -> None:
    """A query of only stop words is a normal case (vector list only): no NOTICE reaches the
    client, while the client's own notices still do."""
    _hash_docs(platform, db_url)
    vector = vector_literal(HashEmbedder(64).embed(["tomato"])[0])
    with psycopg.connect(libpq_url(db_url)) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        assert conn.execute("SHOW client_min_messages").fetchone() == ("notice",)
        for text in ("the of and", "-the", '"and or"', "of"):
            rows = conn.execute(
                "SELECT id, text_rank FROM embedplat.hybrid_search('docs', %s, %s::vector, 3)",
                (text, vector),
            ).fetchall()
            assert len(rows) == 3 and all(r[1] is None for r in rows), text
        assert notices == []
        # The function's setting does not outlive it: the session still gets notices.
        assert conn.execute("SHOW client_min_messages").fetchone() == ("notice",)
        conn.execute("SELECT websearch_to_tsquery('english', 'the of')")
        assert len(notices) == 1 and "stop words" in notices[0]


def test_plain_words_rank_by_idf(platform: Platform, db_url: str) -> None:
    """A rare word outweighs a common one, however often the common one occurs."""
    rows = [{"id": "rare", "text": "a short note on zeppelin design"}] + [
        {"id": f"c{i:02d}", "text": f"cell cell cell growth in culture number {i}"}
        for i in range(30)
    ]
    hash_collection(platform, db_url, rows)
    with platform.connection() as conn:
        hits = hybrid_search_vector(conn, "docs", "zeppelin cell", None, k=5)
        assert [h.id for h in hits][:1] == ["rare"] and hits[0].text_rank == 1
        assert hits[0].text_score is not None and hits[1].text_score is not None
        assert hits[0].text_score > 5 * hits[1].text_score
        # Web-search syntax keeps ts_rank_cd, which favours the dense common word.
        hits = hybrid_search_vector(conn, "docs", "zeppelin or cell", None, k=5)
        assert hits[0].id != "rare"


def test_filter_applies_to_both_lists(platform: Platform, db_url: str) -> None:
    _hash_docs(platform, db_url)
    vector = HashEmbedder(64).embed(["tomato sauce"])[0]
    with platform.connection() as conn:
        for filter_ in ({"lang": "en"}, {"n": {"$gte": 2, "$lt": 12}}, {"$not": {"lang": "en"}}):
            hits = hybrid_search_vector(conn, "docs", "tomato sauce", vector, k=50, filter=filter_)
            assert hits and all(matches(h.metadata, filter_) for h in hits)
            both = [h for h in hits if h.text_rank is not None]
            assert all(matches(h.metadata, filter_) for h in both)


def test_hostile_query_text_and_arguments(platform: Platform, db_url: str) -> None:
    _hash_docs(platform, db_url)
    vector = HashEmbedder(64).embed(["tomato"])[0]
    with platform.connection() as conn:
        for text in (
            "'; DROP TABLE embedplat.chunks; --",
            '"unbalanced',
            "%s %% $1 \\",
            "à la 🍅 tomate",
            "-",
            "or",
        ):
            hybrid_search_vector(conn, "docs", text, vector, k=3)
        with pytest.raises(InvalidInputError, match="both be 0"):
            hybrid_search_vector(conn, "docs", "x", vector, vector_weight=0, text_weight=0)
        with pytest.raises(InvalidInputError, match="rrf_k"):
            hybrid_search_vector(conn, "docs", "x", vector, rrf_k=-1)
    with psycopg.connect(libpq_url(db_url)) as conn:
        assert conn.execute("SELECT count(*) FROM embedplat.chunks").fetchone() == (45,)


def test_tsvector_column_is_generated_and_indexed(platform: Platform, db_url: str) -> None:
    _hash_docs(platform, db_url)
    with psycopg.connect(libpq_url(db_url)) as conn:
        row = conn.execute(
            "SELECT content_tsv::text FROM embedplat.chunks ch JOIN embedplat.records r "
            "ON r.id = ch.record_id WHERE r.external_id = 'p1'"
        ).fetchone()
        assert row is not None and "'tomato'" in row[0] and "'basil'" in row[0]
        # An edit by plain SQL updates it too.
        conn.execute("UPDATE embedplat.chunks SET content = 'lemon tart' WHERE id = 1")
        assert (
            "'tart'"
            in conn.execute(
                "SELECT content_tsv::text FROM embedplat.chunks WHERE id = 1"
            ).fetchone()[0]
        )  # type: ignore[index]
        conn.rollback()
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        # Many chunks that do not mention the word: the GIN index is the way to find it.
        conn.execute(
            "INSERT INTO embedplat.chunks "
            "(record_id, collection_id, ordinal, content, char_start, char_end, token_count) "
            "SELECT 1, 1, 100 + g, 'filler harbor text ' || g, 0, 10, 4 "
            "FROM generate_series(1, 5000) g"
        )
        conn.execute("VACUUM ANALYZE embedplat.chunks")
    plan = plans(
        db_url,
        "SELECT * FROM embedplat.hybrid_search('docs', 'tomato', %s::vector, 3)",
        (vector_literal(HashEmbedder(64).embed(["tomato"])[0]),),
    )
    assert "Bitmap Index Scan on ix_chunks_content_tsv" in plan, plan


def test_cli_and_python_hybrid(platform: Platform, db_url: str, tmp_path: Path) -> None:
    _hash_docs(platform, db_url)
    hits = platform.search("docs", "tomato sauce", k=3, hybrid=True, filter={"lang": "en"})
    assert hits and all(isinstance(h, HybridHit) for h in hits) and hits[0].id == "p1"
    env = _env(EMBEDPLAT_DATABASE_URL=db_url, EMBEDPLAT_HOME=str(tmp_path / "home"))
    proc = run(
        [
            "search",
            "docs",
            "tomato",
            "sauce",
            "--hybrid",
            "-k",
            "3",
            "--filter",
            '{"lang": {"$in": ["en"]}}',
            "--json",
        ],
        env,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["hits"][0]["id"] == "p1"
    assert {"vector_rank", "text_rank", "similarity", "score"} <= set(result["hits"][0])
    bad = run(["search", "docs", "x", "--filter", '{"a": {"$gte": []}}'], env, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: filter.a: $gte needs a number")


def test_hybrid_through_the_orm(platform: Platform, db_url: str) -> None:
    from sqlalchemy import Column, MetaData, Table, Text, create_engine, select

    from embedplat.db.connection import sqlalchemy_url
    from embedplat.orm import hybrid_search_fn

    _hash_docs(platform, db_url)
    engine = create_engine(sqlalchemy_url(db_url))
    meta = MetaData()
    notes = Table("app_notes", meta, Column("slug", Text, primary_key=True), Column("owner", Text))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            notes.insert(), [{"slug": "p1", "owner": "ann"}, {"slug": "p3", "owner": "bob"}]
        )
    vector = HashEmbedder(64).embed(["tomato sauce"])[0]
    hits = hybrid_search_fn("docs", "tomato sauce", np.asarray(vector), 10)
    stmt = (
        select(notes.c.owner, hits.c.id, hits.c.score)
        .join(notes, notes.c.slug == hits.c.id)
        .order_by(hits.c.score.desc())
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        full = [HybridHit.from_row(r) for r in conn.execute(select(hits)).all()]
    engine.dispose()
    with platform.connection() as conn:
        want = hybrid_search_vector(conn, "docs", "tomato sauce", vector, k=10)
    assert full == want
    owners = {"p1": "ann", "p3": "bob"}
    assert [(r.owner, r.id) for r in rows] == [(owners[h.id], h.id) for h in want if h.id in owners]
