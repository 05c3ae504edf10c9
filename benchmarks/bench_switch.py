"""A model switch under load: all-MiniLM-L6-v2 -> all-mpnet-base-v2 with searches all along.

* ``switch``: a collection of every distinct sentence of MRPC and SICK, the AG News texts and
  the SciFact claims (../shared/data; one record each, one chunk each: short texts, so that
  all-mpnet-base-v2 back-fills about 15,000 chunks in minutes on two cores), embedded with
  MiniLM and HNSW-indexed. A reader process searches it all along: it embeds a query with the
  collection's model, calls ``embedplat.search`` naming that model (``query_model`` /
  ``query_fingerprint``), re-embeds and retries once when a swap came between (as
  ``Platform.search`` does), and checks the top hit's similarity against that hit's stored
  vector of the same model. Phases, one after the other, timed: a baseline, ``model switch``,
  the back-fill (``sync``), the target's ANN index build (CONCURRENTLY), the swap
  (``embedplat.model_switch_complete``), after the swap, and the purge of the old vectors after
  the grace period. The reader pauses 0.2 s between searches. Reported: failed searches, results of the wrong model, search latency per
  phase (p50 / p95 / max, end to end and of the SQL call alone), the swap's duration, the
  longest search that overlapped it, the total switch time.
* ``variant``: the same switch from MiniLM to a variant of itself (the same files but
  ``max_seq_length`` 128 in sentence_bert_config.json, registered with ``model add``: another
  fingerprint) on 2,000 of the records: what the switch reused (it must be nothing: vectors of
  other files are another model's) and how close the variant's vectors are.

    python -m benchmarks.bench_switch            # both parts
    python -m benchmarks.bench_switch --only variant
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.embedders.sentence_transformers import resolve_source
from embedplat.errors import ModelMismatchError
from embedplat.indexes import ensure_ann_index
from embedplat.search import search_vector
from embedplat.switch import RETIRE_GRACE_SECONDS, purge_retired

from .common import fresh_database, require_data, server, settings, write_parts

PARTS = ("switch", "variant")
FROM_MODEL = "all-MiniLM-L6-v2"
TO_MODEL = "all-mpnet-base-v2"
VARIANT = "all-MiniLM-L6-v2-seq128"
BASELINE_S = 30.0
AFTER_S = 30.0
# The reader's pause between searches: about 4 searches a second, a steady load that leaves the
# back-fill most of the two cores.
READER_PAUSE_S = 0.2
GOAL_P95_RATIO = 2.0
GOAL_SWAP_BLOCKED_S = 1.0
MACHINE_NOTE = "measured on a 2-core machine; the reader process and the back-fill share it"


def _texts() -> list[str]:
    seen: dict[str, None] = {}
    for name in ("mrpc", "sick"):
        for line in require_data(name, "pairs.jsonl").open(encoding="utf-8"):
            row = json.loads(line)
            seen.setdefault(row["a"].strip(), None)
            seen.setdefault(row["b"].strip(), None)
    for line in require_data("agnews", "records.jsonl").open(encoding="utf-8"):
        seen.setdefault(json.loads(line)["text"].strip(), None)
    for line in require_data("scifact", "queries.jsonl").open(encoding="utf-8"):
        seen.setdefault(json.loads(line)["text"].strip(), None)
    return [t for t in seen if t]


def _queries() -> list[str]:
    """Search texts: SICK's second sentences (real sentences, many of them in the corpus)."""
    rows = [json.loads(line) for line in require_data("sick", "pairs.jsonl").open()]
    return [r["b"] for r in rows[::25]][:300]


def _spread(values: list[float], digits: int = 2) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(float(np.percentile(values, 50)), digits),
        "p95": round(float(np.percentile(values, 95)), digits),
        "max": round(max(values), digits),
    }


def _reader(db: str, collection: str, queries: list[str], ready: Any, stop: Any, out: Any) -> None:
    """Search until ``stop`` is set; put one record per search on ``out`` at the end."""
    log: list[dict[str, Any]] = []
    with Platform(db, settings()) as platform, platform.connection() as conn:
        conn.autocommit = True
        for model in (FROM_MODEL, TO_MODEL):  # loaded before the first search is timed
            platform.embedder(model)
        ready.set()
        n = 0
        while not stop.is_set():
            query = queries[n % len(queries)]
            n += 1
            start = time.time()
            entry: dict[str, Any] = {"start": start, "retries": 0}
            try:
                for attempt in range(2):
                    model = platform.collection(collection).model_name
                    embedder = platform.embedder(model)
                    vector = embedder.embed([query])[0]
                    sql_start = time.perf_counter()
                    try:
                        hits = search_vector(
                            conn,
                            collection,
                            vector,
                            k=10,
                            query_model=embedder.name,
                            query_fingerprint=embedder.fingerprint,
                        )
                    except ModelMismatchError:
                        if attempt == 1:
                            raise
                        entry["retries"] += 1
                        continue
                    entry["sql_ms"] = 1000 * (time.perf_counter() - sql_start)
                    break
                entry["ms"] = 1000 * (time.time() - start)
                entry["model"] = embedder.name
                entry["hits"] = len(hits)
                if hits:
                    top = hits[0]
                    row = conn.execute(
                        f"SELECT 1 - ((e.embedding::vector({int(embedder.dimensions)})) "
                        "<=> %s::vector) "
                        "FROM embedplat.embeddings e "
                        "JOIN embedplat.chunks ch ON ch.id = e.chunk_id "
                        "JOIN embedplat.records r ON r.id = ch.record_id "
                        "JOIN embedplat.collections c ON c.id = r.collection_id "
                        "JOIN embedplat.embedding_models m ON m.id = e.model_id "
                        "WHERE c.name = %s AND r.external_id = %s AND ch.ordinal = %s "
                        "AND m.name = %s AND m.fingerprint = %s",
                        (
                            str(vector.tolist()),
                            collection,
                            top.id,
                            top.chunk_ordinal,
                            embedder.name,
                            embedder.fingerprint,
                        ),
                    ).fetchone()
                    # None: the vector is gone (the old model's, purged since): unverifiable.
                    entry["verified"] = None if row is None else abs(row[0] - top.score) < 1e-4
            except Exception as exc:  # every failure is a finding of the benchmark
                entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
                entry["ms"] = 1000 * (time.time() - start)
            log.append(entry)
            stop.wait(READER_PAUSE_S)
    out.put(log)


def _phase_stats(log: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    mine = [e for e in log if start <= e["start"] < end and "error" not in e]
    return {
        "seconds": round(end - start, 1),
        "searches": len(mine),
        "end_to_end_ms": _spread([e["ms"] for e in mine]),
        "sql_ms": _spread([e["sql_ms"] for e in mine]),
        "models": sorted({e["model"] for e in mine}),
    }


def switch_part(
    server_url: str, limit: int | None, baseline_s: float, after_s: float
) -> dict[str, Any]:
    texts = _texts()[:limit]
    queries = _queries()
    with fresh_database(server_url) as db, Platform(db, settings()) as platform:
        platform.create_collection("switch", model=FROM_MODEL)
        platform.ingest("switch", [{"id": str(i), "text": t} for i, t in enumerate(texts)])
        start = time.perf_counter()
        initial = platform.sync("switch")
        initial_s = time.perf_counter() - start
        chunks = initial.chunks_embedded
        print(
            f"{len(texts):,} records, {chunks:,} chunks embedded with {FROM_MODEL} in {initial_s:.0f} s"
        )
        platform.embedder(TO_MODEL)  # extracted and loaded before the clock starts

        ctx = mp.get_context("spawn")
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        reader = ctx.Process(target=_reader, args=(db, "switch", queries, ready, stop, out))
        reader.start()
        if not ready.wait(timeout=300):
            raise RuntimeError("the reader process did not start")
        marks: dict[str, float] = {"baseline": time.time()}
        time.sleep(baseline_s)
        marks["switch"] = time.time()
        started = platform.switch_model("switch", TO_MODEL)
        marks["backfill"] = time.time()
        backfill = platform.sync("switch", options=platform.sync_options(build_index=False))
        marks["index"] = time.time()
        info = platform.collection("switch")
        with platform.connection() as conn:
            target = conn.execute(
                "SELECT backfill_model_id FROM embedplat.collections WHERE id = %s", (info.id,)
            ).fetchone()
        assert target is not None and target[0] is not None
        index = ensure_ann_index(platform.new_connection, info, int(target[0]), 768)
        marks["swap"] = time.time()
        with psycopg.connect(libpq_url(db), autocommit=True) as conn:
            swap_start = time.perf_counter()
            state = conn.execute(
                "SELECT state FROM embedplat.model_switch_complete('switch')"
            ).fetchone()
            swap_s = time.perf_counter() - swap_start
        marks["after"] = time.time()
        time.sleep(after_s)
        marks["purge"] = time.time()
        with platform.new_connection() as conn:
            conn.autocommit = True
            time.sleep(max(0.0, RETIRE_GRACE_SECONDS - after_s) + 0.1)
            purge_start = time.perf_counter()
            purged = purge_retired(conn, info.id)
            purge_s = time.perf_counter() - purge_start
        time.sleep(5.0)
        marks["end"] = time.time()
        stop.set()
        log: list[dict[str, Any]] = out.get(timeout=120)
        reader.join(timeout=60)

    order = ["baseline", "switch", "backfill", "index", "swap", "after", "purge", "end"]
    phases = {
        name: _phase_stats(log, marks[name], marks[order[i + 1]])
        for i, name in enumerate(order[:-1])
    }
    errors = [e for e in log if "error" in e]
    wrong = [e for e in log if e.get("verified") is False]
    unverifiable = [
        e for e in log if "error" not in e and e.get("verified") is None and e.get("hits")
    ]
    swap_from, swap_to = marks["swap"], marks["after"]
    overlapping = [
        e["ms"] for e in log if e["start"] < swap_to and e["start"] + e["ms"] / 1000 > swap_from
    ]

    def p95_ratio(kind: str) -> float | None:
        before = phases["baseline"][kind].get("p95")
        during = phases["backfill"][kind].get("p95")
        return round(during / before, 2) if before and during else None

    return {
        "note": MACHINE_NOTE,
        "corpus": "every distinct sentence of MRPC (train) and SICK, the AG News test texts and the SciFact train claims: one record and one chunk each",
        "records": len(texts),
        "chunks": chunks,
        "from_model": FROM_MODEL,
        "to_model": TO_MODEL,
        "initial_sync_seconds": round(initial_s, 1),
        "start": started.to_json(),
        "backfill_seconds": round(marks["index"] - marks["backfill"], 1),
        "backfill_chunks": backfill.switch_chunks_embedded,
        "backfill_chunks_per_second_computed": round(
            backfill.switch_chunks_embedded / max(marks["index"] - marks["backfill"], 1e-9), 1
        ),
        "index_build_seconds": round(marks["swap"] - marks["index"], 1),
        "index_built": index,
        "swap_state": state[0] if state else None,
        "swap_seconds": round(swap_s, 4),
        "searches_overlapping_swap": len(overlapping),
        "longest_search_overlapping_swap_ms": round(max(overlapping), 1) if overlapping else None,
        "purge_seconds": round(purge_s, 2),
        "purged_vectors": purged,
        "total_switch_seconds_computed": round(marks["after"] - marks["switch"], 1),
        "searches": len(log),
        "failed_searches": len(errors),
        "errors": sorted({e["error"] for e in errors})[:5],
        "wrong_model_results": len(wrong),
        "unverifiable_results": len(unverifiable),
        "retried_searches": sum(1 for e in log if e.get("retries")),
        "phases": phases,
        # End to end: the query's embedding (on the same two cores as the back-fill's model)
        # and the search; sql: the embedplat.search call alone.
        "p95_during_backfill_over_before_computed": {
            "end_to_end": p95_ratio("end_to_end_ms"),
            "sql": p95_ratio("sql_ms"),
        },
        "goal_p95_ratio": GOAL_P95_RATIO,
        "goal_swap_blocked_seconds": GOAL_SWAP_BLOCKED_S,
    }


def variant_part(server_url: str) -> dict[str, Any]:
    texts = _texts()[:2000]
    with tempfile.TemporaryDirectory() as tmp, fresh_database(server_url) as db:
        folder = Path(tmp) / "minilm-seq128"
        shutil.copytree(resolve_source(FROM_MODEL).path, folder)
        config = folder / "sentence_bert_config.json"
        settings_json = json.loads(config.read_text())
        settings_json["max_seq_length"] = 128
        config.write_text(json.dumps(settings_json))
        with Platform(db, settings()) as platform:
            platform.add_model(VARIANT, folder)
            platform.create_collection("variant", model=FROM_MODEL)
            platform.ingest("variant", [{"id": str(i), "text": t} for i, t in enumerate(texts)])
            platform.sync("variant")
            started = platform.switch_model("variant", VARIANT)
            start = time.perf_counter()
            report = platform.sync("variant")
            seconds = time.perf_counter() - start
            with platform.connection() as conn:
                rows = conn.execute(
                    "SELECT a.embedding::text, b.embedding::text FROM embedplat.embeddings a "
                    "JOIN embedplat.embeddings b ON b.chunk_id = a.chunk_id "
                    "JOIN embedplat.embedding_models ma ON ma.id = a.model_id "
                    "JOIN embedplat.embedding_models mb ON mb.id = b.model_id "
                    "WHERE ma.name = %s AND mb.name = %s",
                    (FROM_MODEL, VARIANT),
                ).fetchall()
                fingerprints = dict(
                    conn.execute(
                        "SELECT name, fingerprint FROM embedplat.embedding_models"
                    ).fetchall()
                )
    cosines = [float(np.dot(np.array(json.loads(a)), np.array(json.loads(b)))) for a, b in rows]
    return {
        "note": MACHINE_NOTE,
        "records": len(texts),
        "from_model": FROM_MODEL,
        "to_model": f"{VARIANT} (the same files, max_seq_length 128)",
        "fingerprints": {k: v[:12] for k, v in fingerprints.items()},
        "start": started.to_json(),
        "chunks_reused": started.chunks_reused,
        "chunks_reembedded": report.switch_chunks_embedded,
        "switched": report.switched,
        "switch_seconds": round(seconds, 1),
        "cosine_to_original_computed": {
            "pairs": len(cosines),
            "min": round(min(cosines), 5) if cosines else None,
            "median": round(statistics.median(cosines), 5) if cosines else None,
            "below_0_9999": sum(1 for c in cosines if c < 0.9999),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=PARTS, action="append")
    parser.add_argument("--quick", action="store_true", help="200 records, short phases")
    args = parser.parse_args()
    parts = tuple(args.only or PARTS)
    new: dict[str, dict[str, Any]] = {}
    with server() as url:
        if "switch" in parts:
            new["switch"] = (
                switch_part(url, 200, 5.0, 5.0)
                if args.quick
                else switch_part(url, None, BASELINE_S, AFTER_S)
            )
            print(json.dumps({k: v for k, v in new["switch"].items() if k != "phases"}, indent=1))
        if "variant" in parts:
            new["variant"] = variant_part(url)
            print(json.dumps(new["variant"], indent=1))
    print(write_parts("switch", new, PARTS))


if __name__ == "__main__":
    main()
