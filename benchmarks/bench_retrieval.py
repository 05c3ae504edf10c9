"""Retrieval quality on SciFact (BEIR; the 809 train claims): embedplat search vs. exact.

* ``embedplat``: the corpus ingested as title + blank line + abstract, chunked, embedded and
  searched through ``embedplat.search`` (HNSW index, best chunk per record).
* ``exact``: an in-memory baseline with the same model on whole documents
  (title + " " + text, the MTEB convention, truncated by the model at 256 tokens), exact cosine.

Reports nDCG@10 and recall@10 (binary relevance from qrels.tsv) for both (result
``retrieval_scifact``), and, over the same embedded collection, ``embedplat.hybrid_search``
(reciprocal rank fusion of the vector and full-text lists) next to vector-only and full-text-only
search (result ``hybrid_scifact``), so the corpus is embedded once for both.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections import defaultdict
from typing import Any

import numpy as np
import psycopg

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.embedders import load_embedder
from embedplat.search import hybrid_search_vector, search_vector
from embedplat.sync import SyncOptions, sync

from .common import (
    fresh_database,
    latency_percentiles,
    require_data,
    server,
    settings,
    write_result,
)

MODEL = "all-MiniLM-L6-v2"
K = 10


def load_scifact(
    limit: int | None,
) -> tuple[list[dict[str, str]], list[dict[str, str]], dict[str, set[str]]]:
    corpus = [json.loads(line) for line in require_data("scifact", "corpus.jsonl").open()]
    queries = [json.loads(line) for line in require_data("scifact", "queries.jsonl").open()]
    qrels: dict[str, set[str]] = defaultdict(set)
    with require_data("scifact", "qrels.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels[row["query_id"]].add(row["doc_id"])
    if limit:
        # Keep every relevant document, then fill up with others: a smaller but fair corpus.
        relevant = {d for docs in qrels.values() for d in docs}
        keep = [d for d in corpus if d["id"] in relevant]
        keep += [d for d in corpus if d["id"] not in relevant][: max(0, limit - len(keep))]
        corpus = keep
    queries = [q for q in queries if q["id"] in qrels]
    return corpus, queries, qrels


def ndcg_recall(ranked: list[str], relevant: set[str]) -> tuple[float, float]:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:K]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), K)))
    recall = len(set(ranked[:K]) & relevant) / len(relevant)
    return dcg / ideal, recall


def evaluate(runs: dict[str, list[str]], qrels: dict[str, set[str]]) -> dict[str, float]:
    scores = [ndcg_recall(runs[q], qrels[q]) for q in runs]
    return {
        "ndcg@10": round(float(np.mean([s[0] for s in scores])), 4),
        "recall@10": round(float(np.mean([s[1] for s in scores])), 4),
    }


def run(limit: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """SciFact through embedplat: (retrieval result, hybrid-vs-vector result)."""
    corpus, queries, qrels = load_scifact(limit)
    embedder = load_embedder(MODEL)
    model = embedder.model  # type: ignore[attr-defined]
    query_vectors = embedder.embed([q["text"] for q in queries])

    start = time.perf_counter()
    doc_vectors = model.encode(
        [f"{d['title']} {d['text']}" for d in corpus],
        batch_size=64,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    exact_seconds = time.perf_counter() - start
    ids = [d["id"] for d in corpus]
    sims = query_vectors @ doc_vectors.T
    exact_runs = {
        q["id"]: [ids[i] for i in np.argsort(-sims[n])[:K]] for n, q in enumerate(queries)
    }

    with server() as url, fresh_database(url) as db, Platform(db, settings()) as platform:
        platform.create_collection("scifact", model=MODEL)
        platform.ingest(
            "scifact", [{"id": d["id"], "text": f"{d['title']}\n\n{d['text']}"} for d in corpus]
        )
        start = time.perf_counter()
        report = sync(
            lambda: psycopg.connect(libpq_url(db)), lambda name: embedder, "scifact", SyncOptions()
        )
        sync_seconds = time.perf_counter() - start
        # Vector-only (the retrieval figure), hybrid (RRF of vector and full-text lists) and
        # full-text alone, over the same embedded collection.
        runs: dict[str, dict[str, list[str]]] = {"vector": {}, "hybrid": {}, "text": {}}
        times: dict[str, list[float]] = {name: [] for name in runs}
        with platform.connection() as conn:
            for n, q in enumerate(queries):
                for name in runs:
                    t = time.perf_counter()
                    if name == "vector":
                        hits: list[Any] = search_vector(conn, "scifact", query_vectors[n], k=K)
                    else:
                        hits = hybrid_search_vector(
                            conn,
                            "scifact",
                            q["text"],
                            query_vectors[n],
                            k=K,
                            vector_weight=0.0 if name == "text" else 1.0,
                        )
                    times[name].append(time.perf_counter() - t)
                    runs[name][q["id"]] = [h.id for h in hits]
    quality = {name: evaluate(ranked, qrels) for name, ranked in runs.items()}
    latency = {name: latency_percentiles(seconds) for name, seconds in times.items()}
    hybrid_result = {
        "corpus_docs": len(corpus),
        "queries": len(queries),
        "chunks": report.chunks_embedded,
        "model": MODEL,
        "vector_only": {**quality["vector"], **latency["vector"]},
        "hybrid_rrf": {**quality["hybrid"], **latency["hybrid"]},
        "text_only": {**quality["text"], **latency["text"]},
        "rrf": {"k": 60, "vector_weight": 1.0, "text_weight": 1.0, "list_depth": max(4 * K, 60)},
        "sync_seconds": round(sync_seconds, 1),
    }
    result = {
        "corpus_docs": len(corpus),
        "queries": len(queries),
        "chunks": report.chunks_embedded,
        "embedplat_search": quality["vector"],
        "exact_whole_documents": evaluate(exact_runs, qrels),
        "sync_seconds": round(sync_seconds, 1),
        "exact_encode_seconds": round(exact_seconds, 1),
        "search_latency_ms_p50": latency["vector"]["p50_ms"],
        "search_latency_ms_p95": latency["vector"]["p95_ms"],
        "published_reference": "MTEB SciFact test split, all-MiniLM-L6-v2: nDCG@10 0.645, recall@10 0.783",
    }
    print(result)
    print(hybrid_result)
    return result, hybrid_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=None, help="corpus size (default: all 5,183)")
    args = parser.parse_args()
    retrieval, hybrid = run(args.limit)
    print(write_result("retrieval_scifact", retrieval))
    print(write_result("hybrid_scifact", hybrid))


if __name__ == "__main__":
    main()
