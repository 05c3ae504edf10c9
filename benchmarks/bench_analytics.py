"""Near-duplicates and anomaly scores in SQL: speed at 100,000 chunks, quality on real data.

* ``duplicates``: 100,000 synthetic 384-d unit vectors (clustered, like topical text, with
  planted near-duplicate pairs and triples whose similarities spread across the threshold)
  inserted directly with binary COPY, HNSW built as sync builds it; then
  ``embedplat.near_duplicates`` at the default threshold, timed, and compared with an exact
  all-pairs computation (numpy, blocked matrix products): recall of the pairs above the
  threshold, and precision.
* ``anomalies``: ``embedplat.anomaly_scores`` on the same 100,000 chunks (time), and quality
  on ../shared/data/agnews (1,959 records; "World" news normal, ≈3 % other topics anomalous)
  with the real model: ROC-AUC and average precision within the collection, and against a
  reference collection made of half the normal records (scoring the other half plus every
  anomaly), each next to an exact in-memory k-NN baseline on the same vectors.

``--only scale`` runs the 100,000-chunk part (results ``duplicates`` and the ``scale`` part of
``anomalies``), ``--only agnews`` the AG News quality part (the ``agnews`` part of
``anomalies``); the other part of results/anomalies.json is kept with the date it was
measured.

    python -m benchmarks.bench_analytics                      # everything
    python -m benchmarks.bench_analytics --only scale --n 20000
    python -m benchmarks.bench_analytics --only agnews --agnews-limit 500
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from embedplat.api import Platform
from embedplat.collections import get_collection
from embedplat.db.connection import libpq_url
from embedplat.embedders import load_embedder
from embedplat.indexes import ensure_ann_index
from embedplat.sync import SyncOptions, sync

from .common import fresh_database, require_data, server, settings, write_parts, write_result

DIMS = 384
THRESHOLD = 0.7  # the calibrated default of embedplat.near_duplicates
K = 10
MODEL = "all-MiniLM-L6-v2"


# -- synthetic data ------------------------------------------------------------------------------


def synthetic_vectors(
    n: int, dims: int = DIMS, seed: int = 42, planted_fraction: float = 0.06
) -> tuple[np.ndarray, int]:
    """``n`` unit vectors: clusters of ~50 around random centres (within-cluster cosine ≈ 0.45,
    like same-topic texts), and a ``planted_fraction`` of near-copies of other rows with cosine
    to their original spread uniformly over 0.6..0.99. Returns (vectors, planted count)."""
    rng = np.random.default_rng(seed)
    n_planted = int(n * planted_fraction)
    n_base = n - n_planted
    centres = rng.standard_normal((max(1, n_base // 50), dims)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sigma = np.sqrt(1.2 / dims)  # |noise|² ≈ 1.2: cos(point, centre) ≈ 0.67
    base = centres[rng.integers(0, len(centres), n_base)] + sigma * rng.standard_normal(
        (n_base, dims)
    ).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    # A near-copy at cosine c of its original: noise of squared norm 1/c² - 1.
    originals = rng.integers(0, n_base, n_planted)
    target = rng.uniform(0.6, 0.99, n_planted)
    scale = np.sqrt((1 / target**2 - 1) / dims).astype(np.float32)[:, None]
    copies = base[originals] + scale * rng.standard_normal((n_planted, dims)).astype(np.float32)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    vectors = np.vstack([base, copies]).astype(np.float32)
    return vectors[rng.permutation(n)], n_planted


def exact_pairs(
    vectors: np.ndarray, threshold: float, block: int = 2048
) -> dict[tuple[int, int], float]:
    """Every pair (i < j) with cosine >= threshold, by blocked matrix products."""
    found: dict[tuple[int, int], float] = {}
    n = len(vectors)
    for start in range(0, n, block):
        sims = vectors[start : start + block] @ vectors.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i < c:
                found[(i, c)] = float(sims[r, c])
    return found


def load_vectors(url: str, collection: str, vectors: np.ndarray) -> tuple[int, float]:
    """Records, chunks and embeddings written directly (binary COPY); returns (model id, s)."""
    started = time.perf_counter()
    dims = vectors.shape[1]
    with psycopg.connect(libpq_url(url)) as conn:
        register_vector(conn)
        fingerprint = hashlib.sha256(f"synthetic-{dims}".encode()).hexdigest()
        row = conn.execute(
            "INSERT INTO embedplat.embedding_models (name, dimensions, normalized, fingerprint) "
            "VALUES (%s, %s, true, %s) RETURNING id",
            (f"synthetic-{dims}", dims, fingerprint),
        ).fetchone()
        assert row is not None
        model_id = int(row[0])
        row = conn.execute(
            "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap, "
            "active_model_id) VALUES (%s, %s, 200, 32, %s) RETURNING id",
            (collection, f"synthetic-{dims}", model_id),
        ).fetchone()
        assert row is not None
        col_id = int(row[0])
        with conn.cursor().copy(
            "COPY embedplat.records (collection_id, external_id, content) FROM STDIN"
        ) as copy:
            for i in range(len(vectors)):
                copy.write_row((col_id, f"v{i:06d}", f"synthetic record {i}"))
        conn.execute(
            "UPDATE embedplat.records SET chunked_hash = content_hash WHERE collection_id = %s",
            (col_id,),
        )
        conn.execute(
            "INSERT INTO embedplat.chunks (record_id, collection_id, ordinal, content, "
            "char_start, char_end, token_count) "
            "SELECT id, collection_id, 0, content, 0, length(content), 3 "
            "FROM embedplat.records WHERE collection_id = %s",
            (col_id,),
        )
        ids = conn.execute(
            "SELECT substr(r.external_id, 2)::int, ch.id, r.id, ch.text_hash "
            "FROM embedplat.chunks ch JOIN embedplat.records r ON r.id = ch.record_id "
            "WHERE ch.collection_id = %s",
            (col_id,),
        ).fetchall()
        with conn.cursor().copy(
            "COPY embedplat.embeddings (chunk_id, model_id, collection_id, record_id, "
            "text_hash, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int4", "int4", "int8", "bytea", "vector"])
            for i, chunk_id, record_id, text_hash in ids:
                copy.write_row((chunk_id, model_id, col_id, record_id, text_hash, vectors[i]))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE embedplat.records, embedplat.chunks, embedplat.embeddings")
    return model_id, time.perf_counter() - started


def build_index(url: str, collection: str, model_id: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(libpq_url(url)) as conn:
        info = get_collection(conn, collection)
    ensure_ann_index(lambda: psycopg.connect(libpq_url(url)), info, model_id, DIMS)
    return time.perf_counter() - started


# -- benchmarks ------------------------------------------------------------------------------------


def bench_scale(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """near_duplicates and anomaly_scores at ``n`` chunks: time, and duplicates' recall."""
    vectors, planted = synthetic_vectors(n)
    started = time.perf_counter()
    exact = exact_pairs(vectors, THRESHOLD)
    exact_seconds = time.perf_counter() - started
    with server() as srv, fresh_database(srv) as db:
        model_id, load_seconds = load_vectors(db, "synthetic", vectors)
        index_seconds = build_index(db, "synthetic", model_id)
        with psycopg.connect(libpq_url(db)) as conn:
            started = time.perf_counter()
            rows = conn.execute(
                "SELECT a, b, similarity FROM embedplat.near_duplicates('synthetic', %s::real, %s)",
                (THRESHOLD, K),
            ).fetchall()
            dup_seconds = time.perf_counter() - started
            conn.rollback()
            started = time.perf_counter()
            scores = conn.execute(
                "SELECT id, score FROM embedplat.anomaly_scores('synthetic', %s)", (K,)
            ).fetchall()
            anomaly_seconds = time.perf_counter() - started
    found = {(int(a[1:]), int(b[1:])): float(s) for a, b, s in rows}
    true_found = [p for p in found if p in exact]
    wrong = [p for p, s in found.items() if p not in exact and s >= THRESHOLD + 1e-6]
    recall = len(true_found) / len(exact) if exact else 1.0
    max_error = max((abs(found[p] - exact[p]) for p in true_found), default=0.0)
    duplicates = {
        "chunks": n,
        "dimensions": DIMS,
        "threshold": THRESHOLD,
        "k": K,
        "planted_near_copies": planted,
        "exact_pairs_above_threshold": len(exact),
        "pairs_found": len(found),
        "recall": round(recall, 4),
        "precision": round(1 - len(wrong) / len(found), 4) if found else 1.0,
        "max_similarity_error": round(max_error, 6),
        "seconds": round(dup_seconds, 1),
        "goal_seconds": 120,
        "goal_recall": 0.95,
        "exact_all_pairs_seconds": round(exact_seconds, 1),
        "load_seconds": round(load_seconds, 1),
        "index_build_seconds": round(index_seconds, 1),
    }
    anomalies_scale = {
        "chunks": n,
        "k": K,
        "records_scored": len(scores),
        "seconds": round(anomaly_seconds, 1),
        "goal_seconds": 120,
    }
    return duplicates, anomalies_scale


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC by the rank-sum (Mann-Whitney) formula, ties counted half."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    pos = labels.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision_of(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    y = labels[order].astype(np.float64)
    precision_at = np.cumsum(y) / np.arange(1, len(y) + 1)
    return float((precision_at * y).sum() / y.sum())


def exact_knn_scores(queries: np.ndarray, reference: np.ndarray, k: int, same: bool) -> np.ndarray:
    sims = queries @ reference.T
    if same:
        np.fill_diagonal(sims, -np.inf)
    top = -np.sort(-sims, axis=1)[:, :k]
    return np.asarray((1 - top).mean(axis=1), dtype=np.float64)


def _fetch_vectors(conn: psycopg.Connection[Any], collection: str) -> dict[str, np.ndarray]:
    register_vector(conn)
    rows = conn.execute(
        "SELECT r.external_id, e.embedding FROM embedplat.embeddings e "
        "JOIN embedplat.records r ON r.id = e.record_id "
        "JOIN embedplat.collections c ON c.id = e.collection_id AND e.model_id = c.active_model_id "
        "WHERE c.name = %s ORDER BY r.external_id, e.chunk_id",
        (collection,),
    ).fetchall()
    out: dict[str, np.ndarray] = {}
    for rid, vec in rows:
        if rid in out:
            raise SystemExit(f"record {rid} has several chunks; the exact baseline assumes one")
        # pgvector's psycopg adapter gives Vector objects for the dimensionless column.
        out[rid] = np.asarray(vec.to_numpy() if hasattr(vec, "to_numpy") else vec, np.float32)
    return out


def bench_agnews(limit: int | None) -> dict[str, Any]:
    records = [json.loads(line) for line in require_data("agnews", "records.jsonl").open()]
    if limit:
        records = records[:limit]
    labels = {r["id"]: int(r["anomaly"]) for r in records}
    rng = np.random.default_rng(0)
    normals = [r for r in records if not r["anomaly"]]
    ref_ids = {
        r["id"] for r in rng.permutation(np.array(normals, dtype=object))[: len(normals) // 2]
    }
    reference = [r for r in records if r["id"] in ref_ids]
    incoming = [r for r in records if r["id"] not in ref_ids]
    embedder = load_embedder(MODEL)
    out: dict[str, Any] = {
        "records": len(records),
        "anomalies": sum(labels.values()),
        "k": K,
        "reference_records": len(reference),
        "scored_against_reference": len(incoming),
    }
    with server() as srv, fresh_database(srv) as db, Platform(db, settings()) as platform:
        started = time.perf_counter()
        for name, rows in (
            ("agnews", records),
            ("agnews_ref", reference),
            ("agnews_new", incoming),
        ):
            platform.create_collection(name, model=MODEL)
            platform.ingest(name, [{"id": r["id"], "text": r["text"]} for r in rows])
            sync(lambda: psycopg.connect(libpq_url(db)), lambda _: embedder, name, SyncOptions())
        out["sync_seconds"] = round(time.perf_counter() - started, 1)
        with psycopg.connect(libpq_url(db)) as conn:
            vec_all = _fetch_vectors(conn, "agnews")
            vec_ref = _fetch_vectors(conn, "agnews_ref")
            vec_new = _fetch_vectors(conn, "agnews_new")
            setups = {
                "within_collection": ("agnews", None, vec_all, vec_all, True),
                "against_reference": ("agnews_new", "agnews_ref", vec_new, vec_ref, False),
            }
            for setup, (collection, ref, queries, refs, same) in setups.items():
                started = time.perf_counter()
                rows = conn.execute(
                    "SELECT id, score FROM embedplat.anomaly_scores(%s, %s, %s)",
                    (collection, K, ref),
                ).fetchall()
                seconds = time.perf_counter() - started
                conn.rollback()
                ids = [str(r[0]) for r in rows]
                ours = np.array([float(r[1]) for r in rows])
                y = np.array([labels[i] for i in ids])
                q_ids = sorted(queries)
                exact = exact_knn_scores(
                    np.stack([queries[i] for i in q_ids]),
                    np.stack([refs[i] for i in sorted(refs)]),
                    K,
                    same,
                )
                y_exact = np.array([labels[i] for i in q_ids])
                out[setup] = {
                    "embedplat": {
                        "roc_auc": round(roc_auc(ours, y), 4),
                        "average_precision": round(average_precision_of(ours, y), 4),
                    },
                    "exact_knn": {
                        "roc_auc": round(roc_auc(exact, y_exact), 4),
                        "average_precision": round(average_precision_of(exact, y_exact), 4),
                    },
                    "records_scored": len(rows),
                    "seconds": round(seconds, 2),
                }
    out["published_reference"] = (
        "NLP-ADBench (full AG News): BERT+LOF ROC-AUC 0.743, OpenAI+LOF 0.891"
    )
    return out


def _write_anomalies(part: str, measured: dict[str, Any]) -> None:
    """Update one part of results/anomalies.json, keeping the other with its own date."""
    write_parts("anomalies", {part: measured}, ("scale", "agnews"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="chunks for the scale runs")
    parser.add_argument(
        "--only",
        choices=["scale", "agnews"],
        default=None,
        help="scale: near-duplicates and anomaly speed at --n chunks; agnews: anomaly quality",
    )
    parser.add_argument(
        "--agnews-limit", type=int, default=None, help="use only the first N AG News records"
    )
    args = parser.parse_args()
    if args.only in (None, "scale"):
        duplicates, anomalies_scale = bench_scale(args.n)
        print(json.dumps(duplicates, indent=2))
        print(json.dumps(anomalies_scale, indent=2))
        write_result("duplicates", duplicates)
        # Written now, so a failure of the quality part loses nothing measured here.
        _write_anomalies("scale", anomalies_scale)
    if args.only in (None, "agnews"):
        quality = bench_agnews(args.agnews_limit)
        print(json.dumps(quality, indent=2))
        _write_anomalies("agnews", quality)


if __name__ == "__main__":
    main()
