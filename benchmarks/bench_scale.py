"""Every SQL function at scale, on one collection of ``--n`` chunks (issue 14's table; its goal
size is 1,000,000, and the same table at 100,000 shows the growth).

The data, stated exactly: ``n`` synthetic 384-d unit vectors from
``bench_analytics.synthetic_vectors`` (clusters of ~50 around random centres, within-cluster
cosine ≈ 0.45 like same-topic texts, and 6 % planted near-copies of other rows at cosine
0.6-0.99), one record and one chunk per vector, loaded straight into embedplat's tables (binary
COPY; no model runs). Each record's text is a real SciFact abstract (the corpus cycled, so the
full-text side has real words and real document frequencies) followed by ``[i]`` to keep every
text unique (near_duplicates pairs equal texts as exact duplicates), and its metadata ``{"bucket": i %
100}`` (a 1 %-selective filter). The queries are ``--queries`` more points of the same
distribution, not in the collection; exact answers are computed in this run with numpy.

Measured, in order: the load (COPY) and the HNSW build (m 16, ef_construction 64, as sync builds
it; ``maintenance_work_mem`` reported), search recall@10 / p50 / p95 against exact k-NN, a
1 %-filtered search (rows returned, recall within the filter), hybrid search p50 / p95 (each
query's vector with four words of its nearest record's text), ``near_duplicates`` (time; pair
recall and precision against exact all-pairs when ``n`` ≤ 200,000, else not computed),
``anomaly_scores`` (time; Spearman correlation of its scores with exact k-NN scores on a sample
of 2,000 records), ``embedplat ingest`` of ``n`` short records into another collection as a
whole command (records/s), a no-op ``embedplat sync`` of the loaded collection as a whole command,
and the database's bytes per chunk (tables, indexes and TOAST of records, chunks and embeddings;
the HNSW index alone).

    python -m benchmarks.bench_scale                 # 100,000 chunks (~10 min on 2 cores)
    python -m benchmarks.bench_scale --n 1000000     # the goal size
    python -m benchmarks.bench_scale --n 20000 --queries 50   # a quick run

Writes results/scale.json with one part per size (``n100000``, ``n1000000``, ...), each dated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from embedplat.db.connection import libpq_url
from embedplat.db.vectors import vector_literal
from embedplat.indexes import build_index

from .bench_analytics import THRESHOLD, exact_pairs, synthetic_vectors
from .common import (
    RESULTS,
    WORK,
    fresh_database,
    latency_percentiles,
    load_direct,
    recall_at_k,
    require_data,
    server,
    write_parts,
)

K = 10
DIMS = 384
COLLECTION = "scale"


# The HNSW build's memory: 1 GB holds the graph of 100,000 x 384 with room to spare; at
# 1,000,000 the graph needs ~3 GB (vectors and neighbour lists), which this 24 GB machine has.
def maintenance_work_mem(n: int) -> str:
    return "1GB" if n <= 300_000 else "4GB"


EXACT_PAIRS_UP_TO = 200_000
ANOMALY_SAMPLE = 2000
GOALS = {
    "search": "recall@10 >= 0.95, p50 <= 5 ms, p95 <= 15 ms",
    "filtered": "10 of 10 rows, p50 <= 20 ms",
    "hybrid": "p50 <= 30 ms",
    "hnsw_build": "<= 10 min (float32)",
    "near_duplicates": "<= 10 min, pair recall >= 0.95",
    "anomaly_scores": "<= 10 min",
    "ingest": ">= 40,000 records/s",
    "noop_sync": "<= 1 s",
}


def _texts() -> list[str]:
    out = []
    with require_data("scifact", "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            if doc.get("text"):
                out.append(f"{doc['title']}\n\n{doc['text']}")
    return out


def load(url: str, vectors: np.ndarray, texts: list[str]) -> dict[str, Any]:
    """One record, chunk and embedding per vector, straight into the tables."""
    started = time.perf_counter()
    load_direct(
        url,
        COLLECTION,
        vectors,
        # Unique texts: near_duplicates pairs records of equal content as exact duplicates
        # whatever their vectors, and the vectors are what is measured.
        lambda i: f"{texts[i % len(texts)]} [{i}]",
        lambda i: {"bucket": i % 100},
    )
    return {"load_seconds": round(time.perf_counter() - started, 1)}


def _timed(
    url: str, query: str, params: list[tuple[Any, ...]]
) -> tuple[list[list[str]], list[float]]:
    """Each query once (after the first 20 again as a warm-up): ids and seconds."""
    ids: list[list[str]] = []
    times: list[float] = []
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for p in params[:20]:
            conn.execute(query, p).fetchall()
        for p in params:
            started = time.perf_counter()
            rows = conn.execute(query, p).fetchall()
            times.append(time.perf_counter() - started)
            ids.append([str(r[0]) for r in rows])
    return ids, times


def _as_ints(ids: list[list[str]]) -> list[list[int]]:
    return [[int(i[1:]) for i in row] for row in ids]


def _top_k(row: np.ndarray) -> list[int]:
    """Indexes of the K largest values, largest first (argpartition: no full sort of 1M)."""
    part = np.argpartition(-row, K)[:K]
    return [int(i) for i in part[np.argsort(-row[part], kind="stable")]]


def _exact_knn_scores(vectors: np.ndarray, sample: np.ndarray, block: int = 200) -> np.ndarray:
    """anomaly_scores' score by exact k-NN for the ``sample`` rows: the mean cosine distance
    to their K nearest other rows (in blocks: 200 x 1M float32 is 800 MB)."""
    out = []
    for start in range(0, len(sample), block):
        rows = sample[start : start + block]
        sims = vectors[rows] @ vectors.T
        sims[np.arange(len(rows)), rows] = -np.inf
        top = -np.partition(-sims, K - 1, axis=1)[:, :K]
        out.append((1 - top).mean(axis=1))
    return np.concatenate(out)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def _cli(db: str, *words: str) -> tuple[float, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDPLAT_")}
    env.update(
        EMBEDPLAT_DATABASE_URL=db,
        EMBEDPLAT_HOME=str(WORK / "scale-home"),
        EMBEDPLAT_BACKEND="torch",
        HF_HUB_OFFLINE="1",
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "embedplat.cli", *words, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"embedplat {' '.join(words)} failed: {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def measure(server_url: str, n: int, n_queries: int) -> dict[str, Any]:
    texts = _texts()
    all_vectors, planted = synthetic_vectors(n + n_queries)
    vectors, queries = all_vectors[:n], all_vectors[n:]
    buckets = np.arange(n) % 100
    result: dict[str, Any] = {
        "chunks": n,
        "dimensions": DIMS,
        "storage": "vector (float32)",
        "queries": n_queries,
        "data": "bench_analytics.synthetic_vectors (clusters of ~50, within-cluster cosine "
        "~0.45, 6 % planted near-copies at cosine 0.6-0.99), one record and chunk each, "
        f"SciFact abstracts cycled as texts ({len(texts):,} distinct, each followed by its "
        "number to keep it unique), metadata bucket = i % 100",
        "planted_near_copies": planted,
        "goals": GOALS,
    }
    started = time.perf_counter()
    sims = queries @ vectors.T
    exact = [_top_k(row) for row in sims]
    rare = np.flatnonzero(buckets == 7)
    exact_rare = [list(rare[_top_k(row[rare])]) for row in sims]
    nearest = [int(e[0]) for e in exact]
    del sims
    result["exact_knn_seconds"] = round(time.perf_counter() - started, 1)

    with fresh_database(server_url) as db:
        with psycopg.connect(libpq_url(db), autocommit=True) as conn:
            name = sql.Identifier(conn.info.dbname)
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET maintenance_work_mem = {}").format(
                    name, sql.Literal(maintenance_work_mem(n))
                )
            )
        result.update(load(db, vectors, texts))
        print("loaded", result["load_seconds"], flush=True)
        report = build_index(lambda: psycopg.connect(libpq_url(db)), COLLECTION)
        result["hnsw_build"] = {
            "seconds": round(report.seconds, 1),
            "options": report.options,
            "maintenance_work_mem": maintenance_work_mem(n),
        }
        print("index", result["hnsw_build"], flush=True)

        ids, times = _timed(
            db,
            "SELECT id FROM embedplat.search(%s, %s::vector, %s)",
            [(COLLECTION, vector_literal(q), K) for q in queries],
        )
        result["search"] = {
            "recall@10": recall_at_k(_as_ints(ids), exact),
            **latency_percentiles(times),
        }
        print("search", result["search"], flush=True)

        ids, times = _timed(
            db,
            "SELECT id FROM embedplat.search(%s, %s::vector, %s, '{\"bucket\": 7}')",
            [(COLLECTION, vector_literal(q), K) for q in queries],
        )
        result["filtered_1_percent"] = {
            "filter": {"bucket": 7},
            "matching_records": len(rare),
            "rows_returned_min": min(len(i) for i in ids),
            "recall@10": recall_at_k(_as_ints(ids), exact_rare),
            **latency_percentiles(times),
        }
        print("filtered", result["filtered_1_percent"], flush=True)

        words = [" ".join(texts[i % len(texts)].split()[:4]) for i in nearest]
        _, times = _timed(
            db,
            "SELECT id FROM embedplat.hybrid_search(%s, %s, %s::vector, %s)",
            [(COLLECTION, w, vector_literal(q), K) for w, q in zip(words, queries, strict=True)],
        )
        result["hybrid_search"] = {
            "query_text": "the first four words of the query vector's nearest record",
            **latency_percentiles(times),
        }
        print("hybrid", result["hybrid_search"], flush=True)

        with psycopg.connect(libpq_url(db)) as conn:
            started = time.perf_counter()
            rows = conn.execute(
                "SELECT a, b, similarity FROM embedplat.near_duplicates(%s, %s::real, %s)",
                (COLLECTION, THRESHOLD, K),
            ).fetchall()
            dup_seconds = time.perf_counter() - started
            conn.rollback()
            started = time.perf_counter()
            scored = conn.execute(
                "SELECT id, score FROM embedplat.anomaly_scores(%s, %s)", (COLLECTION, K)
            ).fetchall()
            anomaly_seconds = time.perf_counter() - started
        duplicates: dict[str, Any] = {
            "threshold": THRESHOLD,
            "pairs_found": len(rows),
            "seconds": round(dup_seconds, 1),
        }
        if n <= EXACT_PAIRS_UP_TO:
            truth = exact_pairs(vectors, THRESHOLD)
            # near_duplicates orders a pair by external id as text ("v10" < "v9"): by number.
            found = {tuple(sorted((int(a[1:]), int(b[1:])))) for a, b, _ in rows}
            duplicates["exact_pairs"] = len(truth)
            duplicates["pair_recall"] = round(len(found & set(truth)) / max(len(truth), 1), 4)
            duplicates["precision"] = round(len(found & set(truth)) / max(len(found), 1), 4)
        else:
            duplicates["pair_recall"] = (
                f"not computed (exact all-pairs above {EXACT_PAIRS_UP_TO:,})"
            )
        result["near_duplicates"] = duplicates
        print("duplicates", duplicates, flush=True)

        ours = {int(i[1:]): float(s) for i, s in scored}
        sample = np.random.default_rng(3).choice(n, size=min(ANOMALY_SAMPLE, n), replace=False)
        exact_scores = _exact_knn_scores(vectors, sample)
        result["anomaly_scores"] = {
            "records_scored": len(scored),
            "seconds": round(anomaly_seconds, 1),
            "spearman_vs_exact_knn_sample": round(
                _spearman(np.array([ours[int(i)] for i in sample]), exact_scores), 4
            ),
            "sample": len(sample),
        }
        print("anomalies", result["anomaly_scores"], flush=True)

        seconds, report_json = _cli(db, "sync", COLLECTION)
        result["noop_sync"] = {
            "whole_command_seconds": round(seconds, 2),
            "chunks_embedded": report_json.get("chunks_embedded"),
            "report_seconds": report_json.get("seconds"),
        }
        print("noop", result["noop_sync"], flush=True)

        with psycopg.connect(libpq_url(db)) as conn:
            sizes = conn.execute(
                "SELECT sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relname IN "
                "  ('records', 'chunks', 'embeddings')), "
                "  sum(pg_relation_size(c.oid)) FILTER (WHERE c.relname LIKE 'ix_embeddings_ann%%'), "
                "  pg_database_size(current_database()) "
                "FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace "
                "WHERE s.nspname = 'embedplat'"
            ).fetchone()
        assert sizes is not None
        result["bytes_per_chunk"] = {
            "records_chunks_embeddings_with_indexes": round(int(sizes[0]) / n),
            "hnsw_index": round(int(sizes[1] or 0) / n),
            "whole_database": round(int(sizes[2]) / n),
        }
        print("sizes", result["bytes_per_chunk"], flush=True)

        short = WORK / "scale-short.jsonl"
        with short.open("w", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(json.dumps({"id": f"s{i}", "text": f"short record number {i}"}) + "\n")
        seconds, report_json = _cli(db, "ingest", "short", str(short))
        result["ingest_short_records"] = {
            "records": n,
            "whole_command_seconds": round(seconds, 1),
            "records_per_second_computed": round(n / seconds),
            "report": {k: v for k, v in report_json.items() if not isinstance(v, (list, dict))},
        }
        print("ingest", result["ingest_short_records"], flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="chunks (default 100,000)")
    parser.add_argument("--queries", type=int, default=200, help="search queries")
    args = parser.parse_args()
    if args.n < 1000 or args.queries < 20:
        parser.error("--n must be at least 1,000 and --queries at least 20")
    WORK.mkdir(parents=True, exist_ok=True)
    part = f"n{args.n}"
    started = time.perf_counter()
    with server() as url:
        measured = measure(url, args.n, args.queries)
    measured["seconds"] = round(time.perf_counter() - started, 1)
    measured["command"] = f"python -m benchmarks.bench_scale --n {args.n} --queries {args.queries}"
    # Keep the other sizes' parts, smallest first.
    path = RESULTS / "scale.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    sizes = {key for key in kept if key.startswith("n") and key[1:].isdigit()} | {part}
    print(write_parts("scale", {part: measured}, tuple(sorted(sizes, key=lambda k: int(k[1:])))))


if __name__ == "__main__":
    main()
