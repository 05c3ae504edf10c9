"""Run the benchmarks and write benchmarks/RESULTS.md.

    python -m benchmarks.run                 # everything (takes a while on a 2-core CPU)
    python -m benchmarks.run ingest sync     # some of them
    python -m benchmarks.run --report        # only re-render RESULTS.md from results/*.json

Each benchmark writes results/<name>.json; RESULTS.md is rendered from those files, so a
partial run keeps the earlier figures of the others (each table says when it was measured).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from .common import HERE, RESULTS

SUITES = {
    "ingest": ["benchmarks.bench_ingest"],
    "sync": ["benchmarks.bench_sync"],
    "retrieval": ["benchmarks.bench_retrieval"],
}


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _when(result: dict[str, Any]) -> str:
    m = result["machine"]
    return f"_measured {m['date']}, {m['cpus']} CPUs, Python {m['python']}_"


def render() -> str:
    out = [
        "# Benchmark results",
        "",
        "Rendered by `python -m benchmarks.run --report` from `benchmarks/results/*.json`.",
        "",
    ]
    if r := _load("ingest"):
        rate = r["records_per_second"]
        out += [
            "## Ingest (binary COPY + set-based upsert, no embedding)",
            "",
            _when(r),
            "",
            f"{r['records']:,} short JSONL records (~{r['record_bytes_avg']:.0f} bytes each), file → readers → database. Goal ≥ {r['goal_records_per_second']:,} records/s.",
            "",
            "| run | seconds | records/s |",
            "|---|---:|---:|",
            *[f"| {k.replace('_', ' ')} | {r['seconds'][k]} | {rate[k]:,} |" for k in rate],
            "",
        ]
    if r := _load("sync_throughput"):
        out += [
            "## Sync throughput vs. the raw model",
            "",
            _when(r),
            "",
            f"{r['docs']} SciFact documents → {r['chunks']} chunks, all-MiniLM-L6-v2 on CPU. Raw = `SentenceTransformer.encode` of the same chunk texts; sync = claim, chunk, embed, compare-and-set write (index build excluded, measured separately).",
            "",
            "| | seconds | chunks/s |",
            "|---|---:|---:|",
            f"| raw encode | {r['raw_encode_seconds']} | {r['raw_chunks_per_second']} |",
            f"| embedplat sync | {r['sync_seconds']} | {r['sync_chunks_per_second']} |",
            "",
            f"Ratio raw/sync = **{r['ratio']}** (goal ≥ {r['goal_ratio']}). HNSW build afterwards: {r['index_build_seconds_after']} s.",
            "",
        ]
    if r := _load("sync_incremental"):
        out += [
            "## Incremental re-embedding",
            "",
            _when(r),
            "",
            f"{r['records']} records of 4 SciFact abstracts each ({r['chunks']} chunks, {r['chunks_per_record']} per record); one sentence of one paragraph edited in every record.",
            "",
            "| | chunks embedded |",
            "|---|---:|",
            f"| embedplat sync after the edits | **{r['chunks_reembedded']}** ({r['reembedded_per_edit']} per edit; goal ≤ {r['goal_per_edit']}) |",
            f"| a peer that re-embeds every chunk of a changed record | {r['peer_behaviour_reembedded']} |",
            f"| no-op sync on the unchanged corpus | {r['noop_chunks_embedded']} ({r['noop_seconds']} s) |",
            "",
        ]
    if r := _load("sync_noop"):
        out += [
            "## No-op sync at scale",
            "",
            _when(r),
            "",
            f"{r['records']:,} synced records, nothing changed: sync embeds {r['noop_chunks_embedded']} chunks in **{r['noop_sync_seconds']} s** (best of {len(r['noop_sync_seconds_all'])}: {r['noop_sync_seconds_all']}).",
            "",
        ]
    if r := _load("sync_index"):
        out += [
            "## HNSW index: built after the back-fill vs. present during it",
            "",
            _when(r),
            "",
            f"{r['vectors']:,} vectors of {r['dimensions']} dimensions (test embedder), whole sync including the index.",
            "",
            "| | seconds |",
            "|---|---:|",
            f"| index built after the back-fill (what sync does) | {r['index_after_backfill_seconds']} |",
            f"| index present during the back-fill | {r['index_before_backfill_seconds']} |",
            "",
        ]
    if r := _load("retrieval_scifact"):
        a, b = r["embedplat_search"], r["exact_whole_documents"]
        out += [
            "## Retrieval quality: SciFact",
            "",
            _when(r),
            "",
            f"{r['corpus_docs']:,} documents ({r['chunks']:,} chunks), {r['queries']} train queries, all-MiniLM-L6-v2.",
            "",
            "| | nDCG@10 | recall@10 |",
            "|---|---:|---:|",
            f"| embedplat search (chunks, HNSW, best chunk per record) | {a['ndcg@10']} | {a['recall@10']} |",
            f"| exact in-memory baseline (whole documents) | {b['ndcg@10']} | {b['recall@10']} |",
            "",
            f"Search latency through `embedplat.search`: p50 {r['search_latency_ms_p50']} ms, p95 {r['search_latency_ms_p95']} ms. Reference: {r['published_reference']}.",
            "",
        ]
    for extra in sorted(RESULTS.glob("*.json")):
        if extra.stem in {
            "ingest",
            "sync_throughput",
            "sync_incremental",
            "sync_noop",
            "sync_index",
            "retrieval_scifact",
        }:
            continue
        data = json.loads(extra.read_text())
        out += [
            f"## {extra.stem}",
            "",
            _when(data),
            "",
            "```json",
            json.dumps({k: v for k, v in data.items() if k != "machine"}, indent=2),
            "```",
            "",
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suites", nargs="*", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--report", action="store_true", help="only re-render RESULTS.md")
    args = parser.parse_args()
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}")
    if not args.report:
        for suite in args.suites or list(SUITES):
            for module in SUITES[suite]:
                subprocess.run([sys.executable, "-m", module], check=True, cwd=HERE.parent)
    (HERE / "RESULTS.md").write_text(render())
    print(HERE / "RESULTS.md")


if __name__ == "__main__":
    main()
