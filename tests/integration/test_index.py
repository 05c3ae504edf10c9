"""Index control: (re)build HNSW/IVFFlat indexes concurrently, options stored and honoured by
sync and search, searches keep working during a rebuild, ORM composition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.db.vectors import vector_literal
from embedplat.errors import InvalidInputError
from embedplat.search import SearchHit, search_vector
from tests.fix_embedders import HashEmbedder
from tests.waiting import wait_for

from .search_helpers import hash_collection, hash_sync, plans, word_rows


def _rows(n: int) -> list[dict[str, Any]]:
    return word_rows(n, seed=3, metadata=lambda i, rng: {"bucket": i % 10})


@pytest.fixture
def corpus(platform: Platform, db_url: str) -> list[dict[str, Any]]:
    rows = _rows(2000)
    hash_collection(platform, db_url, rows)
    return rows


def _indexes(url: str) -> dict[str, str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'embedplat' AND indexname LIKE 'ix_embeddings_ann_%'"
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def _options(url: str) -> dict[str, Any]:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT index_options FROM embedplat.collections WHERE name = 'docs'"
        ).fetchone()
    assert row is not None
    return dict(row[0])


def _exact(rows: list[dict[str, Any]], query: np.ndarray, k: int) -> list[float]:
    sims = HashEmbedder(64).embed([r["text"] for r in rows]) @ query
    return [round(float(s), 5) for s in sorted(sims, reverse=True)[:k]]


def _search_plans(url: str, query: np.ndarray) -> str:
    return plans(
        url, "SELECT * FROM embedplat.search('docs', %s::vector, 5)", (vector_literal(query),)
    )


def test_hnsw_rebuild_with_options(platform: Platform, db_url: str, corpus) -> None:
    assert list(_indexes(db_url)) == ["ix_embeddings_ann_c1_m1"]  # built by sync
    report = platform.build_index("docs", m=8, ef_construction=40, ef_search=80)
    assert report.built and report.replaced and report.vectors == 2000
    indexes = _indexes(db_url)
    assert list(indexes) == ["ix_embeddings_ann_c1_m1"]
    definition = indexes["ix_embeddings_ann_c1_m1"]
    assert (
        "USING hnsw" in definition
        and "m='8'" in definition
        and "ef_construction='40'" in definition
    )
    assert "WHERE ((collection_id = 1) AND (model_id = 1))" in definition
    assert _options(db_url) == {"method": "hnsw", "m": 8, "ef_construction": 40, "ef_search": 80}
    query = HashEmbedder(64).embed(["apple banana"])[0]
    assert "Index Scan using ix_embeddings_ann_c1_m1" in _search_plans(db_url, query)
    with platform.connection() as conn:
        hits = search_vector(conn, "docs", query, k=5, ef_search=400)
    assert [round(h.score, 5) for h in hits] == _exact(corpus, query, 5)


def test_ivfflat_index_is_used_with_probes(platform: Platform, db_url: str, corpus) -> None:
    report = platform.build_index("docs", method="ivfflat", lists=10)
    assert report.options == {"method": "ivfflat", "lists": 10, "probes": 3}
    definition = _indexes(db_url)["ix_embeddings_ann_c1_m1"]
    assert "USING ivfflat" in definition and "lists='10'" in definition
    query = HashEmbedder(64).embed(["kettle lemon"])[0]
    assert "Index Scan using ix_embeddings_ann_c1_m1" in _search_plans(db_url, query)
    with platform.connection() as conn:
        exhaustive = search_vector(conn, "docs", query, k=5, probes=10)  # every list: exact
        default = search_vector(conn, "docs", query, k=5)  # probes from index_options
        filtered = search_vector(conn, "docs", query, k=5, filter={"bucket": 3})
    assert [round(h.score, 5) for h in exhaustive] == _exact(corpus, query, 5)
    assert len(default) == 5
    assert len(filtered) == 5 and all(h.metadata["bucket"] == 3 for h in filtered)


def test_options_stored_before_vectors_are_honoured_by_sync(
    platform: Platform, db_url: str
) -> None:
    platform.create_collection("docs", model="test-hash-64")
    report = platform.build_index("docs", method="ivfflat", lists=4)
    assert not report.built and "next sync" in report.note
    platform.ingest("docs", _rows(300))
    hash_sync(db_url)
    definition = _indexes(db_url)["ix_embeddings_ann_c1_m1"]
    assert "USING ivfflat" in definition and "lists='4'" in definition


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "annoy"}, "hnsw or ivfflat"),
        ({"m": 1}, "--m must be between"),
        ({"m": 16, "ef_construction": 20}, "at least twice"),
        ({"lists": 5}, "IVFFlat options"),
        ({"method": "ivfflat", "m": 5}, "HNSW options"),
        ({"method": "ivfflat", "lists": 0}, "--lists must be between"),
        ({"ef_search": 5000}, "--ef-search must be between"),
    ],
)
def test_invalid_options(platform: Platform, kwargs: dict[str, Any], message: str) -> None:
    platform.create_collection("docs", model="test-hash-64")
    with pytest.raises(InvalidInputError, match=message):
        platform.build_index("docs", **kwargs)


def test_rebuild_while_searches_run(platform: Platform, db_url: str, corpus) -> None:
    """Searches from another thread keep returning k rows, without errors, during rebuilds.

    Each rebuild is held inside its CREATE INDEX CONCURRENTLY (which waits for every older
    snapshot to end: this test keeps one open) until searches have completed meanwhile, so
    "during" is a fact the test arranges, not a window it hopes for.
    """
    query = HashEmbedder(64).embed(["forest granite"])[0]
    stop = threading.Event()
    errors: list[BaseException] = []
    results: list[int] = []

    def searcher() -> None:
        while not stop.is_set():
            try:
                with platform.connection() as conn:
                    hits = search_vector(conn, "docs", query, k=10, filter={"bucket": {"$lt": 5}})
                results.append(len(hits))
            except BaseException as exc:
                errors.append(exc)
                return

    def build_waiting_for_snapshot() -> bool:
        with psycopg.connect(libpq_url(db_url)) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query ILIKE 'CREATE INDEX CONCURRENTLY%%' AND wait_event = 'virtualxid'"
            ).fetchone()
        return bool(row and row[0])

    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        wait_for(lambda: results or errors, 300, "a first search")
        for kwargs in ({"m": 8, "ef_construction": 32}, {"method": "ivfflat"}, {}):
            with (
                psycopg.connect(libpq_url(db_url)) as holder,
                ThreadPoolExecutor(max_workers=1) as pool,
            ):
                # An open REPEATABLE READ snapshot: the concurrent build cannot finish before it.
                holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                holder.execute("SELECT count(*) FROM embedplat.embeddings")
                build = pool.submit(platform.build_index, "docs", **kwargs)
                wait_for(
                    lambda build=build: build_waiting_for_snapshot() or build.done(),
                    300,
                    f"the build {kwargs} to wait inside CREATE INDEX CONCURRENTLY",
                )
                assert not build.done(), build.result()
                before = len(results)
                wait_for(
                    lambda before=before: len(results) >= before + 3 or errors,
                    300,
                    f"three searches while the build {kwargs} runs",
                )
                assert not build.done()
                holder.rollback()
                report = build.result(timeout=300)
            assert report.built and report.replaced
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert results and all(n == 10 for n in results)
    assert list(_indexes(db_url)) == ["ix_embeddings_ann_c1_m1"]
    assert "USING hnsw" in _indexes(db_url)["ix_embeddings_ann_c1_m1"]


def test_interrupted_rebuild_leftover_is_cleaned_up(
    platform: Platform, db_url: str, corpus
) -> None:
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        # What a killed CREATE INDEX CONCURRENTLY leaves: an index under the temporary name.
        conn.execute(
            "CREATE INDEX ix_embeddings_ann_c1_m1_new ON embedplat.embeddings (chunk_id) "
            "WHERE collection_id = 1"
        )
    report = platform.build_index("docs")
    assert report.built
    assert list(_indexes(db_url)) == ["ix_embeddings_ann_c1_m1"]


def test_cli_index_and_similar(platform: Platform, db_url: str, corpus, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDPLAT_")}
    env.update(EMBEDPLAT_DATABASE_URL=db_url, EMBEDPLAT_HOME=str(tmp_path / "home"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "embedplat.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    proc = cli("index", "docs", "--method", "ivfflat", "--lists", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["built"] and report["options"] == {"method": "ivfflat", "lists": 8, "probes": 3}
    proc = cli("index", "docs", "--m", "12", "--ef-construction", "48")
    assert proc.returncode == 0 and "rebuilt ix_embeddings_ann_c1_m1" in proc.stdout
    bad = cli("index", "docs", "--lists", "3")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --lists and --probes are IVFFlat")

    proc = cli(
        "similar", "docs", "r00010", "-k", "4", "--filter", '{"bucket": {"$ne": 0}}', "--json"
    )
    assert proc.returncode == 0, proc.stderr
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(hits) == 4 and all(
        h["metadata"]["bucket"] != 0 and h["id"] != "r00010" for h in hits
    )
    missing = cli("similar", "docs", "nope")
    assert missing.returncode == 1 and "no record with id 'nope'" in missing.stderr


def test_orm_search_composes_with_app_tables(platform: Platform, db_url: str, corpus) -> None:
    from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine, func, select

    from embedplat.db.connection import sqlalchemy_url
    from embedplat.orm import search_fn, similar_fn

    engine = create_engine(sqlalchemy_url(db_url))
    meta = MetaData()
    stock = Table("app_stock", meta, Column("sku", Text, primary_key=True), Column("qty", Integer))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(stock.insert(), [{"sku": f"r{i:05d}", "qty": i % 3} for i in range(2000)])
    query = HashEmbedder(64).embed(["island jungle"])[0]
    hits = search_fn("docs", query, 20, filter={"bucket": {"$in": [1, 2]}}, ef_search=200)
    in_stock = (
        select(hits.c.id, hits.c.similarity, stock.c.qty)
        .join(stock, stock.c.sku == hits.c.id)
        .where(stock.c.qty > 0)
        .order_by(hits.c.similarity.desc())
    )
    with engine.connect() as conn:
        rows = conn.execute(in_stock).all()
        typed = [SearchHit.from_row(r) for r in conn.execute(select(hits)).all()]
        neighbours = conn.execute(
            select(func.count()).select_from(similar_fn("docs", "r00004", 7))
        ).scalar()
    engine.dispose()
    with platform.connection() as conn:
        want = search_vector(
            conn, "docs", query, k=20, filter={"bucket": {"$in": [1, 2]}}, ef_search=200
        )
    assert typed == want
    qty = {f"r{i:05d}": i % 3 for i in range(2000)}
    assert [r.id for r in rows] == [h.id for h in want if qty[h.id] > 0]
    assert neighbours == 7
