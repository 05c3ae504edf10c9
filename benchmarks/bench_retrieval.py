"""Retrieval quality on SciFact (BEIR; the 809 train claims): embedplat search vs. exact.

* ``embedplat``: the corpus ingested as title + blank line + abstract, chunked, embedded and
  searched through ``embedplat.search`` (HNSW index, best chunk per record).
* ``exact``: an in-memory baseline with the same model on whole documents
  (title + " " + text, the MTEB convention, truncated by the model at 256 tokens), exact cosine.

Reports nDCG@10 and recall@10 (binary relevance from qrels.tsv) for both (result
``retrieval_scifact``), and, over the same embedded collection, ``embedplat.hybrid_search``
(reciprocal rank fusion of the vector and full-text lists) next to vector-only and full-text-only
search (result ``hybrid_scifact``), so the corpus is embedded once for both.

The per-model work (exact baseline, ingest, sync, the searches) is :func:`measure_model`, which
``bench_models`` runs for each model it compares.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.embedders import Embedder, load_embedder
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
# Search modes of measure_model: embedplat.search, hybrid_search (RRF), hybrid_search text-only.
MODES = ("vector", "hybrid", "text")
# The fusion settings the hybrid searches run with, as recorded in the results.
RRF = {"k": 60, "vector_weight": 1.0, "text_weight": 1.0, "list_depth": max(4 * K, 60)}


def load_scifact(
    limit: int | None, queries_limit: int | None = None
) -> tuple[list[dict[str, str]], list[dict[str, str]], dict[str, set[str]]]:
    """SciFact's corpus, the queries that have relevance judgements, and those judgements.

    ``limit``: keep every relevant document of the queries, then fill up with others to
    ``limit`` documents. ``queries_limit``: only the first N queries (and so only their
    relevant documents are kept): for trial runs.
    """
    corpus = [json.loads(line) for line in require_data("scifact", "corpus.jsonl").open()]
    queries = [json.loads(line) for line in require_data("scifact", "queries.jsonl").open()]
    qrels: dict[str, set[str]] = defaultdict(set)
    with require_data("scifact", "qrels.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels[row["query_id"]].add(row["doc_id"])
    queries = [q for q in queries if q["id"] in qrels]
    if queries_limit is not None:
        queries = queries[:queries_limit]
        qrels = defaultdict(set, {q["id"]: qrels[q["id"]] for q in queries})
    if limit:
        # Keep every relevant document, then fill up with others: a smaller but fair corpus.
        relevant = {d for docs in qrels.values() for d in docs}
        keep = [d for d in corpus if d["id"] in relevant]
        keep += [d for d in corpus if d["id"] not in relevant][: max(0, limit - len(keep))]
        corpus = keep
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


def document_text(doc: dict[str, str]) -> str:
    """A document as a record: title, blank line, abstract."""
    return f"{doc['title']}\n\n{doc['text']}"


@dataclass(frozen=True)
class ModelRun:
    """One model's pass over a SciFact corpus (:func:`measure_model`)."""

    model: str
    dimensions: int
    max_seq_length: int
    """Tokens the model reads of a text; the exact baseline's documents are cut there."""
    chunks: int
    sync_seconds: float
    """The whole sync of the corpus, embedding and HNSW build included."""
    exact_encode_seconds: float
    exact: dict[str, float]
    """nDCG@10 and recall@10 of the exact whole-document baseline."""
    quality: dict[str, dict[str, float]]
    """nDCG@10 and recall@10 per search mode (``vector``, ``hybrid``, ``text``)."""
    latency: dict[str, dict[str, float]]
    """p50_ms and p95_ms per search mode."""


def max_seq_length(embedder: Embedder) -> int:
    """Tokens the embedder reads of a text (a variant's export says; torch's model does)."""
    manifest = getattr(embedder, "manifest", None)
    if manifest is not None:
        return int(manifest.max_seq_length)
    return int(embedder.model.max_seq_length)  # type: ignore[attr-defined]


def measure_model(
    server_url: str,
    model_name: str,
    corpus: list[dict[str, str]],
    queries: list[dict[str, str]],
    qrels: dict[str, set[str]],
    modes: tuple[str, ...] = MODES,
) -> ModelRun:
    """SciFact through embedplat with one model, in a fresh database of ``server_url``.

    The exact baseline (whole documents, exact cosine, in memory) first; then the corpus is
    ingested, synced, and every query searched in each of ``modes``: ``vector``
    (``embedplat.search``), ``hybrid`` (RRF of the vector and full-text lists) and ``text``
    (``hybrid_search`` with vector_weight 0), over the same embedded collection.
    """
    embedder = load_embedder(model_name)
    query_vectors = embedder.embed([q["text"] for q in queries])

    start = time.perf_counter()
    # embed() is the model's own encode (batch 64, normalised) on torch, and the runtime on
    # a backend variant: the baseline of each variant is computed with that variant.
    doc_vectors = embedder.embed([f"{d['title']} {d['text']}" for d in corpus])
    exact_seconds = time.perf_counter() - start
    ids = [d["id"] for d in corpus]
    sims = query_vectors @ doc_vectors.T
    exact_runs = {
        q["id"]: [ids[i] for i in np.argsort(-sims[n])[:K]] for n, q in enumerate(queries)
    }

    with fresh_database(server_url) as db, Platform(db, settings()) as platform:
        platform.create_collection("scifact", model=model_name)
        platform.ingest("scifact", [{"id": d["id"], "text": document_text(d)} for d in corpus])
        start = time.perf_counter()
        report = sync(
            lambda: psycopg.connect(libpq_url(db)), lambda name: embedder, "scifact", SyncOptions()
        )
        sync_seconds = time.perf_counter() - start
        runs: dict[str, dict[str, list[str]]] = {name: {} for name in modes}
        times: dict[str, list[float]] = {name: [] for name in modes}
        with platform.connection() as conn:
            for n, q in enumerate(queries):
                for name in modes:
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
    return ModelRun(
        model=model_name,
        dimensions=embedder.dimensions,
        max_seq_length=max_seq_length(embedder),
        chunks=report.chunks_embedded,
        sync_seconds=sync_seconds,
        exact_encode_seconds=exact_seconds,
        exact=evaluate(exact_runs, qrels),
        quality={name: evaluate(ranked, qrels) for name, ranked in runs.items()},
        latency={name: latency_percentiles(seconds) for name, seconds in times.items()},
    )


def run(limit: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """SciFact through embedplat: (retrieval result, hybrid-vs-vector result)."""
    corpus, queries, qrels = load_scifact(limit)
    with server() as url:
        m = measure_model(url, MODEL, corpus, queries, qrels)
    quality, latency = m.quality, m.latency
    hybrid_result = {
        "corpus_docs": len(corpus),
        "queries": len(queries),
        "chunks": m.chunks,
        "model": MODEL,
        "vector_only": {**quality["vector"], **latency["vector"]},
        "hybrid_rrf": {**quality["hybrid"], **latency["hybrid"]},
        "text_only": {**quality["text"], **latency["text"]},
        "rrf": RRF,
        "sync_seconds": round(m.sync_seconds, 1),
    }
    result = {
        "corpus_docs": len(corpus),
        "queries": len(queries),
        "chunks": m.chunks,
        "embedplat_search": quality["vector"],
        "exact_whole_documents": m.exact,
        "sync_seconds": round(m.sync_seconds, 1),
        "exact_encode_seconds": round(m.exact_encode_seconds, 1),
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
