"""Embedding models compared on SciFact: all-MiniLM-L6-v2 (384 d) vs all-mpnet-base-v2 (768 d).

* ``quality``: each model on the same SciFact corpus (``--limit`` documents; every relevant
  document of the queries is kept) and the 809 train claims, through
  :func:`benchmarks.bench_retrieval.measure_model`: nDCG@10 and recall@10 of vector search
  (``embedplat.search``) and hybrid search (``embedplat.hybrid_search``, RRF) with the model,
  of the exact whole-document baseline with the model (documents cut at the model's
  ``max_seq_length``), search latency p50 / p95, chunks, and the sync of the corpus (HNSW build
  included). Full-text-only search does not use the model: it runs once, over the chunks of
  the first model's collection.
* ``throughput``: embedding speed on this CPU. A fixed sample (the first ``--sample-docs``
  documents of SciFact's corpus.jsonl, whatever ``--limit``) is ingested into a fresh database
  and synced (claim, chunk, embed, compare-and-set write; no index build), then the chunk texts
  that sync stored go through ``SentenceTransformer.encode`` alone (raw). ``--runs`` runs per
  model, interleaved A B, B A, A B, ... so a busy spell of the machine hits both models alike;
  chunks/s as min / median / max over the runs.

A model that is not installed here (all-mpnet-base-v2 needs its five part packages, see
docs/models.md) is reported as not measured, with the reason, and the others are measured;
with none available the benchmark exits with that message.

    python -m benchmarks.bench_models [--limit N] [--queries N] [--runs N] [--sample-docs N]
                                      [--models NAME ...] [--note TEXT]
                                      [--only quality|throughput]

``--note`` says how busy the machine was (written into each part; default: a shared machine).

Writes results/models_scifact.json (each part dated; ``--only`` re-runs one, keeping the other).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from typing import Any

import psycopg

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.embedders import load_embedder, locate_model
from embedplat.errors import ModelError
from embedplat.sync import SyncOptions, sync

from .bench_retrieval import (
    MODES,
    RRF,
    K,
    ModelRun,
    document_text,
    load_scifact,
    measure_model,
)
from .common import fresh_database, server, settings, write_parts

MODELS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
PARTS = ("quality", "throughput")
# About 20 minutes for the whole benchmark on a quiet 2-core machine: mpnet embeds ~5x slower
# than MiniLM, and its exact baseline reads 384 tokens of each document (MiniLM 256).
DEFAULT_LIMIT = 1000
DEFAULT_RUNS = 3
DEFAULT_SAMPLE_DOCS = 60
BATCH_SIZE = 64  # the embedder's and sync's default batch, used by the raw encode too
MACHINE_NOTE = "measured on a shared 2-core machine (other work ran at the same time)"

_SAMPLE_CHUNKS = (
    "SELECT ch.content FROM embedplat.chunks ch "
    "JOIN embedplat.collections c ON c.id = ch.collection_id "
    "WHERE c.name = %s ORDER BY ch.record_id, ch.ordinal"
)


def _spread(values: list[float], digits: int = 2) -> dict[str, Any]:
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
        "all": [round(v, digits) for v in values],
    }


def _load_average() -> float:
    return round(os.getloadavg()[0], 2)


def available_models(names: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The models that load here (each loaded now, and all-mpnet-base-v2 reassembled from its
    parts, so nothing timed later pays for it), and why each of the others does not."""
    ok: list[str] = []
    missing: dict[str, str] = {}
    for name in names:
        try:
            locate_model(name)
            embedder = load_embedder(name)
            embedder.embed(["warm up the model"] * 8)
        except ModelError as exc:
            missing[name] = str(exc)
        else:
            ok.append(name)
    return ok, missing


def _quality_entry(m: ModelRun) -> dict[str, Any]:
    return {
        "dimensions": m.dimensions,
        "max_seq_length": m.max_seq_length,
        "chunks": m.chunks,
        "vector": {**m.quality["vector"], **m.latency["vector"]},
        "hybrid_rrf": {**m.quality["hybrid"], **m.latency["hybrid"]},
        "exact_whole_documents": m.exact,
        "sync_seconds_index_included": round(m.sync_seconds, 1),
        "sync_chunks_per_second_computed": round(m.chunks / m.sync_seconds, 1),
        "exact_encode_seconds": round(m.exact_encode_seconds, 1),
    }


def quality(
    url: str,
    models: list[str],
    limit: int | None,
    queries_limit: int | None,
    command: str,
    note: str,
    missing: dict[str, str],
) -> dict[str, Any]:
    """Search quality and latency per model on the same corpus and queries."""
    corpus, queries, qrels = load_scifact(limit, queries_limit)
    load_before = _load_average()
    started = time.perf_counter()
    per_model: dict[str, Any] = {}
    text_only: dict[str, Any] | None = None
    for n, name in enumerate(models):
        # Full-text search does not use the model: measured with the first model only.
        modes = MODES if n == 0 else tuple(m for m in MODES if m != "text")
        m = measure_model(url, name, corpus, queries, qrels, modes)
        per_model[name] = _quality_entry(m)
        if "text" in m.quality:
            text_only = {**m.quality["text"], **m.latency["text"], "chunks_of": name}
        print(name, per_model[name], flush=True)
    relevant = {d for docs in qrels.values() for d in docs}
    return {
        "note": note,
        "command": command,
        "limit": limit,
        "corpus_docs": len(corpus),
        "relevant_docs": len(relevant),
        "queries": len(queries),
        "k": K,
        "rrf": RRF,
        "models": per_model,
        "text_only": text_only,
        "not_measured": missing,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_1m_before_after": [load_before, _load_average()],
    }


def _interleaved(models: list[str], runs: int) -> list[str]:
    """A B, B A, A B, ...: each run of every model, in alternating order."""
    order: list[str] = []
    for run in range(runs):
        order += models if run % 2 == 0 else list(reversed(models))
    return order


def _sync_and_encode(
    url: str, name: str, rows: list[dict[str, str]]
) -> tuple[float, float, list[str]]:
    """One run of one model on the sample: (sync seconds, raw encode seconds, chunk texts)."""
    embedder = load_embedder(name)
    with fresh_database(url) as db, Platform(db, settings()) as platform:
        platform.create_collection("sample", model=name)
        platform.ingest("sample", rows)
        start = time.perf_counter()
        report = sync(
            lambda: psycopg.connect(libpq_url(db)),
            lambda model: embedder,
            "sample",
            SyncOptions(batch_size=BATCH_SIZE, build_index=False),
        )
        sync_seconds = time.perf_counter() - start
        with platform.connection() as conn:
            texts = [row[0] for row in conn.execute(_SAMPLE_CHUNKS, ("sample",))]
    if report.chunks_embedded != len(texts):
        raise SystemExit(
            f"{name}: the sync embedded {report.chunks_embedded} chunks of {len(texts)} stored"
        )
    model = embedder.model  # type: ignore[attr-defined]
    start = time.perf_counter()
    model.encode(
        texts,
        batch_size=BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return sync_seconds, time.perf_counter() - start, texts


def throughput(
    url: str,
    models: list[str],
    sample_docs: int,
    runs: int,
    command: str,
    note: str,
    missing: dict[str, str],
) -> dict[str, Any]:
    """Sync and raw-encode chunks/s per model on a fixed sample, runs interleaved."""
    corpus, _, _ = load_scifact(None)  # in file order
    sample = corpus[:sample_docs]
    rows = [{"id": d["id"], "text": document_text(d)} for d in sample]
    order = _interleaved(models, runs)
    load_before = _load_average()
    started = time.perf_counter()
    syncs: dict[str, list[float]] = {name: [] for name in models}
    raws: dict[str, list[float]] = {name: [] for name in models}
    texts_of: dict[str, list[str]] = {}
    for name in order:
        sync_seconds, raw_seconds, texts = _sync_and_encode(url, name, rows)
        if texts_of.setdefault(name, texts) != texts:
            raise SystemExit(f"{name}: two syncs of the same sample stored different chunks")
        syncs[name].append(sync_seconds)
        raws[name].append(raw_seconds)
        print(name, f"sync {sync_seconds:.2f} s, raw {raw_seconds:.2f} s", flush=True)
    per_model: dict[str, Any] = {}
    for name in models:
        chunks = len(texts_of[name])
        sync_rate = [chunks / s for s in syncs[name]]
        raw_rate = [chunks / s for s in raws[name]]
        per_model[name] = {
            "chunks": chunks,
            "chunk_texts_sha256": hashlib.sha256("\0".join(texts_of[name]).encode()).hexdigest(),
            "sync_seconds": _spread(syncs[name]),
            "raw_encode_seconds": _spread(raws[name]),
            "sync_chunks_per_second_computed": _spread(sync_rate, 1),
            "raw_chunks_per_second_computed": _spread(raw_rate, 1),
            "sync_vs_raw_ratio_of_medians_computed": round(
                statistics.median(sync_rate) / statistics.median(raw_rate), 3
            ),
        }
    first = per_model[models[0]]
    for name in models:
        entry = per_model[name]
        for kind in ("sync", "raw"):
            key = f"{kind}_chunks_per_second_computed"
            entry[f"{kind}_speed_vs_first_model_computed"] = round(
                entry[key]["median"] / first[key]["median"], 3
            )
    return {
        "note": note,
        "command": command,
        "sample_docs": len(sample),
        "sample": (
            f"the first {len(sample)} documents of SciFact's corpus.jsonl (title, blank line, "
            "abstract), chunked by each model's collection (the model's own tokenizer; the "
            "default 200 tokens, overlap 32); raw encode: the chunk texts that model's sync "
            "stored"
        ),
        "same_chunk_texts_across_models": len({e["chunk_texts_sha256"] for e in per_model.values()})
        == 1,
        "order": order,
        "runs_per_model": runs,
        "batch_size": BATCH_SIZE,
        "sync_options": "no HNSW build: claims, chunking, embedding and writes",
        "first_model": models[0],
        "models": per_model,
        "not_measured": missing,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_1m_before_after": [load_before, _load_average()],
    }


def _command(args: argparse.Namespace, part: str) -> str:
    words = ["python -m benchmarks.bench_models", f"--only {part}"]
    if part == "quality":
        words.append(f"--limit {args.limit}")
        if args.queries is not None:
            words.append(f"--queries {args.queries}")
    else:
        words += [f"--sample-docs {args.sample_docs}", f"--runs {args.runs}"]
    if tuple(args.models) != MODELS:
        words.append("--models " + " ".join(args.models))
    return " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"corpus documents for the quality part (default {DEFAULT_LIMIT:,}; 0: all 5,183)",
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=None,
        help="only the first N queries and their relevant documents (trial runs; default all 809)",
    )
    parser.add_argument(
        "--runs", type=int, default=DEFAULT_RUNS, help="throughput runs per model (default 3)"
    )
    parser.add_argument(
        "--sample-docs",
        type=int,
        default=DEFAULT_SAMPLE_DOCS,
        help=f"documents of the throughput sample (default {DEFAULT_SAMPLE_DOCS})",
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="models to compare")
    parser.add_argument(
        "--note",
        default=MACHINE_NOTE,
        help=f"how busy the machine was, written into each part (default: {MACHINE_NOTE!r})",
    )
    parser.add_argument("--only", choices=PARTS, action="append")
    args = parser.parse_args()
    if args.runs < 1 or args.sample_docs < 1 or args.limit < 0 or (args.queries or 1) < 1:
        parser.error("--runs, --sample-docs and --queries must be at least 1, --limit at least 0")
    parts = tuple(args.only or PARTS)
    models, missing = available_models(tuple(args.models))
    for name, reason in missing.items():
        print(f"NOT MEASURED: {name} is not available here: {reason}", file=sys.stderr)
    if not models:
        raise SystemExit(
            "no model to measure: " + "; ".join(f"{n}: {r}" for n, r in missing.items())
        )
    new: dict[str, dict[str, Any]] = {}
    with server() as url:
        if "quality" in parts:
            new["quality"] = quality(
                url,
                models,
                args.limit or None,
                args.queries,
                _command(args, "quality"),
                args.note,
                missing,
            )
        if "throughput" in parts:
            new["throughput"] = throughput(
                url,
                models,
                args.sample_docs,
                args.runs,
                _command(args, "throughput"),
                args.note,
                missing,
            )
    print(write_parts("models_scifact", new, PARTS))


if __name__ == "__main__":
    main()
