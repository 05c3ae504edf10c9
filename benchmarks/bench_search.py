"""Search measurements.

* ``latency`` (result ``search_latency``): recall@10 against exact search and p50/p95 latency of
  ``embedplat.search`` over 100,000 x 384 synthetic vectors, for several ``ef_search`` values,
  plus a 1 %-selective filter and the bare pgvector index query for reference. Goal: recall@10
  >= 0.95 at p50 <= 5 ms.

  The vectors are clustered Gaussians, L2-normalised: 1,000 cluster centres in a 48-dimensional
  latent space, points scattered around them, mapped into 384 dimensions by a random orthonormal
  projection plus a little isotropic noise. Sentence embeddings behave like this (a low intrinsic
  dimension inside a larger space, neighbours much closer than random pairs); ``--isotropic``
  uses full-rank 384-d clusters instead, a much harder case for any ANN index. They are loaded
  straight into embedplat's tables with binary COPY (one chunk per record, a registered model
  row), then the HNSW index is built with `embedplat index` defaults (m=16, ef_construction=64).

Hybrid vs. vector-only search on SciFact is measured by ``bench_retrieval`` (result
``hybrid_scifact``), over the corpus it embeds anyway.

    python -m benchmarks.bench_search                  # 100,000 vectors (search_latency)
    python -m benchmarks.bench_search --isotropic      # the same, isotropic vectors
                                                       # (search_latency_isotropic)
    python -m benchmarks.bench_search --vectors 5000   # a quick run
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from embedplat.db.connection import libpq_url
from embedplat.indexes import build_index

from .common import (
    fresh_database,
    latency_percentiles,
    load_direct,
    recall_at_k,
    server,
    write_result,
)

K = 10
# hnsw.ef_search of the filtered search and of the bare index query: set explicitly (pgvector's
# default is 40 too, but a server or collection setting could change the default).
REFERENCE_EF_SEARCH = 40
GOAL_RECALL = 0.95
GOAL_P50_MS = 5.0


# -- synthetic vectors ------------------------------------------------------------------------


def synthetic_vectors(
    n: int, dims: int, *, clusters: int = 1000, latent: int | None = 48, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, cluster of each): clustered Gaussians, L2-normalised, float32."""
    rng = np.random.default_rng(seed)
    space = latent or dims
    centres = rng.standard_normal((clusters, space)).astype(np.float32)
    labels = rng.integers(0, clusters, size=n)
    points = centres[labels] + 0.6 * rng.standard_normal((n, space)).astype(np.float32)
    if latent:
        basis, _ = np.linalg.qr(rng.standard_normal((dims, latent)).astype(np.float32))
        points = points @ basis.T + 0.05 * rng.standard_normal((n, dims)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32), labels


def load_synthetic(url: str, vectors: np.ndarray, buckets: np.ndarray) -> None:
    """One record + chunk + embedding per vector, straight into the tables (binary COPY)."""
    load_direct(
        url,
        "bench",
        vectors,
        lambda i: f"synthetic record {i}",
        lambda i: {"bucket": int(buckets[i])},
    )


def _meets_goal(run: dict[str, Any]) -> bool:
    return bool(run["recall@10"] >= GOAL_RECALL and run["p50_ms"] <= GOAL_P50_MS)


def _check_filter_rows(url: str, expected: int) -> None:
    """Fail loudly when the loaded metadata does not match the filter as the data says it
    should (e.g. a metadata shape change in load_synthetic): the filtered figures would
    otherwise silently read 0 rows and recall 0."""
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM embedplat.records r JOIN embedplat.collections c "
            "ON c.id = r.collection_id "
            "WHERE c.name = 'bench' AND embedplat.metadata_matches(r.metadata, %s::jsonb)",
            ('{"bucket": 0}',),
        ).fetchone()
    found = int(row[0]) if row else 0
    if found != expected:
        raise SystemExit(
            f"bench_search: {found} loaded records match the filter {{'bucket': 0}}, "
            f"expected {expected}; check load_synthetic's metadata"
        )


def latency(server_url: str, n: int, dims: int, n_queries: int, isotropic: bool) -> dict[str, Any]:
    # Queries come from the same distribution as the data (the last n_queries points).
    all_vectors, _ = synthetic_vectors(n + n_queries, dims, latent=None if isotropic else 48)
    vectors, queries = all_vectors[:n], all_vectors[n:]
    buckets = np.random.default_rng(1).integers(0, 100, size=n)  # bucket 0: a 1 % filter

    sims = queries @ vectors.T
    exact = [list(np.argsort(-row)[:K]) for row in sims]
    rare = np.flatnonzero(buckets == 0)
    exact_rare = [list(rare[np.argsort(-row[rare])[:K]]) for row in sims]

    result: dict[str, Any] = {
        "vectors": n,
        "dimensions": dims,
        "queries": n_queries,
        "data": "isotropic clustered Gaussians"
        if isotropic
        else "clustered Gaussians in a 48-d latent space, projected to 384-d + noise",
        "k": K,
        "goal": f"recall@{K} >= {GOAL_RECALL} at p50 <= {GOAL_P50_MS:g} ms",
    }
    with fresh_database(server_url) as db:
        with psycopg.connect(libpq_url(db), autocommit=True) as conn:
            dbname = sql.Identifier(conn.info.dbname)
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET maintenance_work_mem = '1GB'").format(dbname)
            )
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET max_parallel_maintenance_workers = 1").format(dbname)
            )
        start = time.perf_counter()
        load_synthetic(db, vectors, buckets)
        result["load_seconds"] = round(time.perf_counter() - start, 1)
        _check_filter_rows(db, len(rare))
        report = build_index(lambda: psycopg.connect(libpq_url(db)), "bench")
        result["index_build_seconds"] = round(report.seconds, 1)
        result["index_options"] = report.options

        def run(
            sql: str, params: Any, ef_search: int | None = None
        ) -> tuple[list[list[int]], list[float]]:
            ids: list[list[int]] = []
            times: list[float] = []
            with psycopg.connect(libpq_url(db), autocommit=True) as conn:
                if ef_search is not None:  # for the session: the bare query sets nothing itself
                    conn.execute(
                        "SELECT set_config('hnsw.ef_search', %s, false)", (str(ef_search),)
                    )
                for q in queries[:50]:  # warm the cache and the prepared statement
                    conn.execute(sql, params(q)).fetchall()
                for q in queries:
                    t = time.perf_counter()
                    rows = conn.execute(sql, params(q)).fetchall()
                    times.append(time.perf_counter() - t)
                    ids.append([int(r[0][1:]) for r in rows])
            return ids, times

        def lit(q: np.ndarray) -> str:
            return "[" + ",".join(map(repr, q.tolist())) + "]"

        runs = []
        for ef in (40, 100, 200):
            ids, times = run(
                "SELECT id FROM embedplat.search('bench', %s::vector, %s, ef_search => %s)",
                lambda q, ef=ef: (lit(q), K, ef),
            )
            runs.append(
                {
                    "ef_search": ef,
                    "recall@10": recall_at_k(ids, exact),
                    **latency_percentiles(times),
                }
            )
            runs[-1]["meets_goal"] = _meets_goal(runs[-1])
            print(runs[-1])
        result["embedplat_search"] = runs

        ids, times = run(
            "SELECT id FROM embedplat.search('bench', %s::vector, %s, '{\"bucket\": 0}', "
            "ef_search => %s)",
            lambda q: (lit(q), K, REFERENCE_EF_SEARCH),
        )
        result["filtered_1_percent"] = {
            "filter": {"bucket": 0},
            "ef_search": REFERENCE_EF_SEARCH,
            "ef_search_set": True,
            "matching_records": len(rare),
            "rows_expected": min(K, len(rare)),
            "rows_returned_min": min(len(i) for i in ids),
            "recall@10": recall_at_k(ids, exact_rare),
            **latency_percentiles(times),
        }
        print(result["filtered_1_percent"])

        with psycopg.connect(libpq_url(db)) as conn:
            model_id, cid = conn.execute(
                "SELECT active_model_id, id FROM embedplat.collections WHERE name = 'bench'"
            ).fetchone()  # type: ignore[misc]
        # The bare index query (what the function runs inside), for reference. The ids are
        # numbers from the catalogue spliced in as literals, as embedplat.search does: the
        # planner matches the partial index's predicate only against constants.
        raw_sql = (
            "SELECT r.external_id FROM (SELECT e.record_id FROM embedplat.embeddings e "
            f"WHERE e.collection_id = {int(cid)} AND e.model_id = {int(model_id)} "
            f"ORDER BY (e.embedding::vector({dims})) <=> %s::vector LIMIT %s) s "
            "JOIN embedplat.records r ON r.id = s.record_id"
        )
        ids, times = run(raw_sql, lambda q: (lit(q), K), ef_search=REFERENCE_EF_SEARCH)
        result["raw_pgvector_index_query"] = {
            "ef_search": REFERENCE_EF_SEARCH,
            "ef_search_set": True,
            "recall@10": recall_at_k(ids, exact),
            **latency_percentiles(times),
        }
        print(result["raw_pgvector_index_query"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["latency"], action="append")
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--isotropic", action="store_true", help="full-rank clusters (harder)")
    args = parser.parse_args()
    only = set(args.only or ["latency"])
    with server() as url:
        if "latency" in only:
            name = "search_latency_isotropic" if args.isotropic else "search_latency"
            write_result(name, latency(url, args.vectors, args.dims, args.queries, args.isotropic))


if __name__ == "__main__":
    main()
