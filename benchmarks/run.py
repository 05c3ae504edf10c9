"""Run the benchmarks and write benchmarks/RESULTS.md.

    python -m benchmarks.run                 # everything (takes a while on a 2-core CPU)
    python -m benchmarks.run ingest sync     # some of them
    python -m benchmarks.run --report        # only re-render RESULTS.md from results/*.json

Suites and the result files they write:

    ingest       bench_ingest            ingest
    sync         bench_sync              sync_throughput, sync_incremental, sync_noop, sync_index
    retrieval    bench_retrieval         retrieval_scifact, hybrid_scifact
    models       bench_models            models_scifact
    search       bench_search            search_latency
                 bench_search --isotropic  search_latency_isotropic
    calibration  calibrate_duplicates    calibration
    analytics    bench_analytics         duplicates, anomalies
    workers      bench_workers           workers
    attach       bench_attach            attach
    chunking     bench_chunking          chunking
    switch       bench_switch            switch
    pgai         bench_pgai              pgai
    backends     bench_backends          backends
    latency      bench_query_latency     query_latency
    langchain    bench_langchain         langchain
    scale        bench_scale             scale

Each benchmark writes results/<name>.json; RESULTS.md is rendered from those files, so a
partial run keeps the earlier figures of the others. Each section says when it was measured
(a file whose parts are measured separately, workers and anomalies, dates each part; files
from before parts were dated show the file's date) and which command reproduces it. A missing
file leaves its section out; a file this script does not know (or cannot read) is shown as
JSON.

Environment: EMBEDPLAT_BENCH_DATA (the data folder; default ../shared/data relative to the
repository root), EMBEDPLAT_BENCH_DATABASE_URL (a server to use instead of the embedded one),
EMBEDPLAT_BENCH_RESULTS (write results/*.json, and RESULTS.md beside that folder, elsewhere:
for trial runs that must not replace the stored figures).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .bench_attach import INLINE_EVERYTHING
from .bench_chunking import markdown as chunking_markdown
from .bench_langchain import markdown as langchain_markdown
from .bench_pgai import markdown as pgai_markdown
from .bench_workers import markdown as workers_markdown
from .common import HERE, RESULTS, measured_line

# Each suite: the commands (module and arguments) that write its result files.
SUITES: dict[str, list[list[str]]] = {
    "ingest": [["benchmarks.bench_ingest"]],
    "sync": [["benchmarks.bench_sync"]],
    "retrieval": [["benchmarks.bench_retrieval"]],
    # ~20 min: all-mpnet-base-v2 embeds ~5x slower than all-MiniLM-L6-v2 (bench_models).
    "models": [["benchmarks.bench_models"]],
    "search": [["benchmarks.bench_search"], ["benchmarks.bench_search", "--isotropic"]],
    "calibration": [["benchmarks.calibrate_duplicates"]],
    "analytics": [["benchmarks.bench_analytics"]],
    "workers": [["benchmarks.bench_workers"]],
    "attach": [["benchmarks.bench_attach"]],
    "chunking": [["benchmarks.bench_chunking"]],
    # ~30 min: all-mpnet-base-v2 back-fills ~15,700 chunks next to a searching reader.
    "switch": [["benchmarks.bench_switch"]],
    # ~17 min, plus building pgai's own venv the first time (bench_pgai's docstring).
    "pgai": [["benchmarks.bench_pgai"]],
    # ~45 min: five backends and raw torch as whole processes, 3 alternating runs each.
    "backends": [["benchmarks.bench_backends"]],
    "latency": [["benchmarks.bench_query_latency"]],
    # ~10 min, plus building the langchain venv the first time (bench_langchain's docstring).
    "langchain": [["benchmarks.bench_langchain"]],
    # 100,000 chunks: ~10 min; `--n 1000000` is issue 14's goal size.
    "scale": [["benchmarks.bench_scale"]],
}

Result = dict[str, Any]


def _load(name: str) -> Result | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _when(result: Result, part: Result | None = None) -> str:
    return measured_line(result, part)


def _raw(title: str, result: Result) -> list[str]:
    """A result shown as JSON (unknown to render(), or not in the shape it expects)."""
    return [
        f"## {title}",
        "",
        _when(result),
        "",
        "```json",
        json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2),
        "```",
        "",
    ]


# -- bench_ingest ---------------------------------------------------------------------------------


def _ingest(r: Result) -> list[str]:
    rate = r["records_per_second"]
    return [
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


# -- bench_sync -----------------------------------------------------------------------------------


def _sync_throughput(r: Result) -> list[str]:
    return [
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


def _sync_incremental(r: Result) -> list[str]:
    # Older files call the computed count peer_behaviour_reembedded.
    peer = r.get("peer_reembedded_computed", r.get("peer_behaviour_reembedded"))
    if peer is None:
        raise KeyError("peer_reembedded_computed")
    return [
        "## Incremental re-embedding",
        "",
        _when(r),
        "",
        f"{r['records']} records of 4 SciFact abstracts each ({r['chunks']} chunks, {r['chunks_per_record']} per record); one sentence of one paragraph edited in every record.",
        "",
        "| | chunks embedded |",
        "|---|---:|",
        f"| embedplat sync after the edits | **{r['chunks_reembedded']}** ({r['reembedded_per_edit']} per edit; goal ≤ {r['goal_per_edit']}) |",
        f"| a peer that re-embeds every chunk of a changed record (computed: the edited records' chunks, no peer was run) | {peer} |",
        f"| no-op sync on the unchanged corpus | {r['noop_chunks_embedded']} ({r['noop_seconds']} s) |",
        "",
    ]


def _noop_note(r: Result) -> str:
    """What the no-op syncs embedded, as measured per run; older files wrote a constant 0."""
    if "noop_chunks_embedded_all" in r:
        return (
            f" Chunks embedded by each run: {r['noop_chunks_embedded_all']}; records re-chunked: "
            f"{r['noop_records_chunked_all']}."
        )
    return (
        " (This older run asserted 0 chunks in each run and wrote the 0 as a constant; runs "
        "since record what each run embedded.)"
    )


def _sync_noop(r: Result) -> list[str]:
    return [
        "## No-op sync at scale",
        "",
        _when(r),
        "",
        f"{r['records']:,} synced records, nothing changed: sync embeds {r['noop_chunks_embedded']} chunks in **{r['noop_sync_seconds']} s** (best of {len(r['noop_sync_seconds_all'])}: {r['noop_sync_seconds_all']}). Goal: 0 chunks embedded, well under a second.{_noop_note(r)}",
        "",
    ]


def _sync_index(r: Result) -> list[str]:
    after, before = r["index_after_backfill_seconds"], r["index_before_backfill_seconds"]
    return [
        "## HNSW index: built after the back-fill vs. present during it",
        "",
        _when(r),
        "",
        f"{r['vectors']:,} vectors of {r['dimensions']} dimensions (hash embedder: the model is not the point), whole sync including the index. Bar: building the index after the back-fill (what sync does) must beat maintaining it during the back-fill.",
        "",
        "| | seconds |",
        "|---|---:|",
        f"| index built after the back-fill (what sync does) | **{after}** |",
        f"| index present during the back-fill | {before} |",
        "",
        f"Building afterwards is {before / after:.1f} times faster." if after else "",
        "",
    ]


# -- bench_retrieval ------------------------------------------------------------------------------


def _retrieval(r: Result) -> list[str]:
    a, b = r["embedplat_search"], r["exact_whole_documents"]
    return [
        "## Retrieval quality: SciFact",
        "",
        _when(r),
        "",
        f"{r['corpus_docs']:,} documents ({r['chunks']:,} chunks), {r['queries']} train queries, all-MiniLM-L6-v2. Bar: the exact in-memory baseline with the same model; published reference: {r['published_reference']}.",
        "",
        "| | nDCG@10 | recall@10 |",
        "|---|---:|---:|",
        f"| embedplat search (chunks, HNSW, best chunk per record) | **{a['ndcg@10']}** | **{a['recall@10']}** |",
        f"| exact in-memory baseline (whole documents) | {b['ndcg@10']} | {b['recall@10']} |",
        "",
        f"Search latency through `embedplat.search`: p50 {r['search_latency_ms_p50']} ms, p95 {r['search_latency_ms_p95']} ms.",
        "",
    ]


# -- bench_search ---------------------------------------------------------------------------------


def _ef(run: Result) -> str:
    """The ef_search of a run; older files labelled 40 without setting it (pgvector's default
    was in effect, but nothing set it)."""
    if run.get("ef_search_set"):
        return str(run["ef_search"])
    return f"{run['ef_search']} (pgvector's default: not set by this older run)"


def _search_latency(r: Result) -> list[str]:
    opts = r.get("index_options") or {}
    index = ", ".join(f"{k}={v}" for k, v in opts.items() if k != "method")
    title = "isotropic vectors" if r["benchmark"].endswith("_isotropic") else "synthetic vectors"
    f1 = r["filtered_1_percent"]
    raw = r["raw_pgvector_index_query"]
    return [
        f"## Search latency and recall: `embedplat.search` ({title})",
        "",
        _when(r),
        "",
        f"{r['vectors']:,} vectors of {r['dimensions']} dimensions ({r['data']}), one chunk per record, loaded with binary COPY ({r['load_seconds']} s); {opts.get('method', 'hnsw').upper()} index ({index}) built in {r['index_build_seconds']} s. {r['queries']} queries from the same distribution, k = {r['k']}, recall@10 against exact search. Goal: **{r['goal']}**.",
        "",
        "| query | ef_search | recall@10 | p50 ms | p95 ms |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| `embedplat.search` | {run['ef_search']} | {run['recall@10']} | {run['p50_ms']} | {run['p95_ms']} |"
            for run in r["embedplat_search"]
        ],
        f"| `embedplat.search`, filter matching 1 % (`{json.dumps(f1['filter'])}`) | {_ef(f1)} | {f1['recall@10']} | {f1['p50_ms']} | {f1['p95_ms']} |",
        f"| bare pgvector index query, for reference | {_ef(raw)} | {raw['recall@10']} | {raw['p50_ms']} | {raw['p95_ms']} |",
        "",
        f"Filtered search: the fewest rows any query returned was {f1['rows_returned_min']} of {r['k']}; recall is against the exact top {r['k']} of the matching rows.",
        "",
    ]


def _hybrid(r: Result) -> list[str]:
    rrf = r["rrf"]
    rows = [
        ("`embedplat.hybrid_search` (RRF)", r["hybrid_rrf"]),
        ("vector only: `embedplat.search`", r["vector_only"]),
        ("text only: `hybrid_search`, vector_weight 0", r["text_only"]),
    ]
    gain = r["hybrid_rrf"]["ndcg@10"] - r["vector_only"]["ndcg@10"]
    return [
        "## Hybrid search quality: SciFact",
        "",
        _when(r),
        "",
        f"{r['corpus_docs']:,} documents ({r['chunks']:,} chunks), {r['queries']} train queries, {r['model']}; reciprocal rank fusion with k = {rrf['k']}, weights {rrf['vector_weight']} (vector) / {rrf['text_weight']} (text), lists {rrf['list_depth']} deep. Bar: vector-only search on the same chunks (same corpus and model as the retrieval benchmark).",
        "",
        "| | nDCG@10 | recall@10 | p50 ms | p95 ms |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {name} | {m['ndcg@10']} | {m['recall@10']} | {m['p50_ms']} | {m['p95_ms']} |"
            for name, m in rows
        ],
        "",
        f"Hybrid vs. vector only: nDCG@10 **{gain:+.4f}**. Sync of the corpus: {r['sync_seconds']} s.",
        "",
    ]


# -- calibrate_duplicates -------------------------------------------------------------------------


def _calibration(r: Result) -> list[str]:
    mrpc, sick = r["mrpc"], r["sick"]
    default = r["default_threshold"]

    def row(name: str, part: dict[str, Any], pairs: int) -> str:
        best = part["best_f1"]
        at = part.get("at_default_threshold")
        at_text = f"{at['f1']} | {at['precision']} / {at['recall']}" if at else "- | -"
        return (
            f"| {name} | {pairs:,} | {part['positives']:,} | {part['average_precision']} | "
            f"{best['f1']} at {best['threshold']} | {best['precision']} / {best['recall']} | "
            f"{at_text} |"
        )

    return [
        "## Near-duplicate threshold calibration",
        "",
        _when(r),
        "",
        f"Cosine similarity of {r['model']} vectors (the product's own embedder) for labelled sentence pairs ({r['texts_embedded']:,} distinct texts): how well it separates duplicates from the rest, and the threshold that does it best. The default threshold of `embedplat.near_duplicates` / `duplicate_groups` is the SICK (relatedness ≥ 4) best-F1 threshold rounded to two decimals: **{default}**, checked on MRPC.",
        "",
        f"| pairs | count | positives | average precision | best F1 (threshold) | precision / recall | F1 at {default} | precision / recall at {default} |",
        "|---|---:|---:|---:|---|---|---:|---|",
        row("MRPC train: paraphrase", mrpc, mrpc["pairs"]),
        row("SICK: relatedness ≥ 4", sick["related_ge_4"], sick["pairs"]),
        row("SICK: relatedness ≥ 4.5", sick["related_ge_4_5"], sick["pairs"]),
        "",
        f"SICK Spearman (cosine vs. relatedness): {sick['spearman']}. Published reference: {r['published_reference']}.",
        "",
    ]


# -- bench_analytics ------------------------------------------------------------------------------


def _duplicates(r: Result) -> list[str]:
    return [
        "## Near-duplicates at scale: `embedplat.near_duplicates`",
        "",
        _when(r),
        "",
        f"{r['chunks']:,} synthetic {r['dimensions']}-d unit vectors (clustered like topical text, with {r['planted_near_copies']:,} planted near-copies at cosine 0.6 to 0.99 to their original), loaded with binary COPY ({r['load_seconds']} s), HNSW built as sync builds it ({r['index_build_seconds']} s). Threshold {r['threshold']}, k = {r['k']}; checked against an exact all-pairs computation (numpy, {r['exact_all_pairs_seconds']} s).",
        "",
        "| | measured | goal |",
        "|---|---:|---:|",
        f"| time of `embedplat.near_duplicates` | **{r['seconds']} s** | ≤ {r['goal_seconds']} s |",
        f"| recall of the {r['exact_pairs_above_threshold']:,} exact pairs above the threshold | **{r['recall']}** | ≥ {r['goal_recall']} |",
        f"| precision of the {r['pairs_found']:,} pairs found | {r['precision']} | |",
        f"| largest similarity error of a found pair | {r['max_similarity_error']} | |",
        "",
    ]


def _anomalies(r: Result) -> list[str]:
    # Two parts measured separately (bench_analytics --only): each with its own date.
    out = [
        "## Anomaly scores: `embedplat.anomaly_scores`",
        "",
    ]
    if not r.get("scale") and not r.get("agnews"):
        return []
    if scale := r.get("scale"):
        out += [
            _when(r, scale),
            "",
            f"Speed: {scale['chunks']:,} synthetic chunks (the near-duplicate data above), k = {scale['k']}: {scale['records_scored']:,} records scored in **{scale['seconds']} s** (goal ≤ {scale['goal_seconds']} s).",
            "",
        ]
    if ag := r.get("agnews"):
        setups = [
            ("within the collection", ag.get("within_collection")),
            ("against a reference collection", ag.get("against_reference")),
        ]
        out += [
            _when(r, ag),
            "",
            f'Quality: AG News one-class, {ag["records"]:,} records ("World" news normal, {ag["anomalies"]} of other topics anomalous), all-MiniLM-L6-v2, k = {ag["k"]}. Within the collection every record is scored against the others; against a reference, {ag["reference_records"]:,} normal records form the reference collection and the other {ag["scored_against_reference"]:,} (every anomaly among them) are scored. Bar: an exact in-memory k-NN score on the same vectors; published reference: {ag["published_reference"]}.',
            "",
            "| setup | ROC-AUC | average precision | exact k-NN ROC-AUC | exact k-NN AP | records | seconds |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *[
                f"| {name} | **{s['embedplat']['roc_auc']}** | {s['embedplat']['average_precision']} | {s['exact_knn']['roc_auc']} | {s['exact_knn']['average_precision']} | {s['records_scored']:,} | {s['seconds']} |"
                for name, s in setups
                if s
            ],
            "",
            f"Sync of the three collections: {ag['sync_seconds']} s.",
            "",
        ]
    return out


# -- bench_workers --------------------------------------------------------------------------------


def _workers(r: Result) -> list[str]:
    what = []
    if r.get("throughput"):
        what.append(
            "Throughput: the same backlog embedded in-process and by 1 or 2 Celery worker "
            "processes, clock from the task sent to the last vector stored; bar: in-process "
            "`embedplat sync` (the `vs in-process` column)."
        )
    if r.get("notify_latency"):
        what.append(
            "Latency: a record ingested until `embedplat.search` finds it, through trigger, "
            "listener, debounce, task and worker; the debounce is its floor."
        )
    if not what:
        return []
    # Two parts measured separately (bench_workers --only): workers_markdown dates each.
    return [
        "## Celery workers: throughput, and change → searchable through NOTIFY",
        "",
        " ".join(what),
        "",
        workers_markdown(r).rstrip(),
        "",
    ]


# -- bench_attach ---------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _ms_range(part: Result, key: str) -> str:
    """min / median / max of the writer-alone figure ``key`` over a back-fill's runs."""
    values = sorted(run["app_writes_before"][key] for run in part["runs"])
    return f"{values[0]} / {values[len(values) // 2]} / {values[-1]}"


def _share(part: Result, key: str) -> str:
    shares = sorted(run[key] / run["seconds"] for run in part["runs"])
    return f"{shares[0]:.0%} to {shares[-1]:.0%}"


def _parts_share(part: Result) -> str:
    shares = sorted(
        run["functions"].get("attach_sql_parts", {"total_ms": 0.0})["total_ms"]
        / run["functions"]["attach_backfill"]["total_ms"]
        for run in part["runs"]
    )
    return f"{shares[0]:.1%} to {shares[-1]:.1%}"


def _floor_rate(r: Result) -> str:
    ov = r.get("overhead")
    if not ov:
        return "not measured"
    return f"{ov['rows'] / ov['profile']['records_insert_floor_seconds']['median']:,.0f} (computed)"


def _mmm(spread: dict[str, Any]) -> str:
    return f"{spread['min']} / {spread['median']} / {spread['max']}"


def _prune_free(part: Result) -> bool:
    """Whether no run of a back-fill had a prune pass (a first attach to an empty collection)."""
    return all(run.get("records_checked", 1) == 0 for run in part["runs"])


def _phases(part: Result) -> str:
    if _prune_free(part):
        return "a first attach: the forward pass only, no prune pass"
    return "forward and prune phases"


def _prune_note(part: Result) -> str:
    if _prune_free(part):
        return " (a first attach has no prune pass)"
    return " (the rest is the prune phase, which re-derives every record to find those whose row is gone)"


def _attach(r: Result) -> list[str]:
    # Two parts measured separately (bench_attach --only): each with its own date.
    out: list[str] = []
    if ov := r.get("overhead"):
        text, other = ov["text_column_update"], ov["other_column_update"]
        prof = ov["profile"]
        floor = prof["records_insert_floor_seconds"]["median"]
        fn = prof["one_row_text_updates"]["functions"]
        trig = fn["attach_trigger"]["total_ms_per_call"]
        parts = (
            fn.get("attach_sql_parts", {"total_ms": 0.0})["total_ms"]
            / prof["one_row_text_updates"]["updates"]
        )
        out += [
            _when(r, ov),
            "",
            f"Trigger overhead, {ov['note']}: {ov['rows']:,} SciFact-text rows in one statement into an unattached twin, into a table attached with the default `inline_rows` (1,000: the statement queues its keys, a sync derives the records after the commit) and into one attached with `inline_rows` {INLINE_EVERYTHING:,} (the statement writes every record itself); the order rotates per run, {ov['runs']} runs each; min / median / max seconds; ratios computed from the medians. _Drain_: the `embedplat.attach_drain` loop (what a sync runs first) that then writes the queued rows' records, outside the app's transaction.",
            "",
            "| statement | twin s | attached s (keys queued) | ratio (computed) | goal | drain after it s | drain rows/s (computed) | attached, all inline s | ratio (computed) |",
            "|---|---|---|---:|---|---|---|---|---:|",
            *[
                f"| {'`COPY`' if m == 'copy' else '`INSERT ... SELECT`'} of {ov['rows']:,} rows | {_mmm(b['plain_seconds'])} | {_mmm(b['attached_seconds'])} | {b['attached']['ratio_of_medians_computed']} | ≤ {ov['goal_bulk_ratio']}: {_met(b['attached']['ratio_of_medians_computed'] <= ov['goal_bulk_ratio'])} | {_mmm(b['drain_seconds'])} | {b['drain_rows_per_second_computed']['median']:,.0f} (median) | {_mmm(b['inline_seconds'])} | {b['inline']['ratio_of_medians_computed']} |"
                for m, b in ov["bulk"].items()
            ],
            "",
            f"One-row `UPDATE`s in autocommit, interleaved on the two tables, {ov['updates_per_round']} per table per round, {len(text['rounds'])} rounds; added latency = attached minus twin (computed per round; min / median / max over the rounds):",
            "",
            "| one-row UPDATE | added p50 ms | added p95 ms | goal |",
            "|---|---|---|---|",
            f"| of an attached text column | {_mmm(text['added_p50_ms_computed'])} | {_mmm(text['added_p95_ms_computed'])} | p50 ≤ {text['goal_added_p50_ms']} ms: {_met(text['added_p50_ms_computed']['median'] <= text['goal_added_p50_ms'])} |",
            f"| of an unattached column | {_mmm(other['added_p50_ms_computed'])} | {_mmm(other['added_p95_ms_computed'])} | p50 ≤ {other['goal_added_p50_ms']} ms: {_met(other['added_p50_ms_computed']['median'] <= other['goal_added_p50_ms'])} |",
            "",
            f"New work from the {other['rows_updated']:,} unattached-column updates: stale records {other['work_before']['stale_records']:,} before and {other['work_after']['stale_records']:,} after, queue rows {other['work_before']['queue_rows']} and {other['work_after']['queue_rows']}, newest record `updated_at` unchanged: {other['work_before']['records_max_updated_at'] == other['work_after']['records_max_updated_at']}; record xmin changed for {other['records_touched_xmin_changed']} of the {other['records_touched_xmin_compared']} updated rows whose version was taken before, and for {other['sample_records_xmin_changed']} of a {other['sample_records']:,}-record sample. **No new work: {other['no_new_work']}.**",
            "",
            f"Where the time goes (`track_functions = all`, auto_explain of the trigger's statements; after the timed runs): a plain `INSERT ... SELECT` of the same rows straight into `embedplat.records`, no trigger at all, takes **{floor} s** (median of 3, rolled back) against {ov['bulk']['insert_select']['plain_seconds']['median']} s for the app's own table: writing the records (their two btree keys, the partial stale index, the GIN metadata index, the generated content hash, the foreign-key check per row and the NOTIFY triggers) is the bulk of the overhead, so no trigger that writes this table in the app's transaction can reach 1.5 times the plain insert: hence the queue for statements past `inline_rows`. Per one-row update the attachment's generated trigger function (static statements, planned once per session; an UPDATE that changes no attached column returns before any other work) takes {trig} ms{'' if not parts else f', of which building SQL from `pg_attribute` (`attach_sql_parts`) is {parts:.3f} ms'}. The full profile is in `results/attach.json` (`overhead.profile`).",
            "",
        ]
    if bf := r.get("backfill"):
        out += [
            _when(r, bf),
            "",
            f"Back-fill, {bf['note']}: attach a {bf['rows']:,}-row table ({bf['table_bytes'] / 1e6:.0f} MB, SciFact text) and run `embedplat.attach.backfill` (one transaction per batch; {_phases(bf)}) at each batch size, runs interleaved; meanwhile an app writer thread updates the text column of a random row and inserts a new row, alternately, 5 ms apart, in autocommit. Rows/s = rows read / whole back-fill time (computed); write times include the app's own trigger work. The same writer alone for 3 s before each back-fill: p99 {_ms_range(bf, 'p99_ms')} ms, max {_ms_range(bf, 'max_ms')} ms (min / median / max over the runs).",
            "",
            "| batch | rows/s min / median / max (computed) | seconds | app write p99 ms (min / median / max) | app write max ms | writes > 100 ms | records = table rows | goals |",
            "|---:|---|---|---|---:|---:|---|---|",
            *[
                f"| {batch}{' (default)' if int(batch) == bf['default_batch'] else ''} | {b['rows_per_second_computed']['min']:,.0f} / {b['rows_per_second_computed']['median']:,.0f} / {b['rows_per_second_computed']['max']:,.0f} | {b['seconds']['median']} (median) | {_mmm(b['app_write_p99_ms'])} | {b['app_write_max_ms']} | {b['app_writes_over_100_ms']} | {b['records_equal_table_every_run']} | ≥ {bf['goal_rows_per_second']:,} rows/s: {_met(b['rows_per_second_computed']['median'] >= bf['goal_rows_per_second'])}; no write > {bf['goal_app_write_max_ms']:.0f} ms: {_met(b['app_writes_over_100_ms'] == 0)} |"
                for batch, b in bf["by_batch"].items()
            ],
            "",
            f"Where the time goes: the forward phase took {_share(bf, 'forward_seconds')} of the whole back-fill time{_prune_note(bf)}; rebuilding the SQL from `pg_attribute` (`attach_sql_parts`) took {_parts_share(bf)} of the time inside `embedplat.attach_backfill` (`track_functions = all`): not what limits it. Each forward batch writes records as the bulk insert above does (the records-insert floor there is {_floor_rate(r)} rows/s) and takes a `FOR SHARE` lock on every source row it reads.",
            "",
        ]
    if not out:
        return []
    return ["## Attached tables: trigger overhead and back-fill", "", *out]


# -- bench_models ---------------------------------------------------------------------------------


def _not_measured(part: Result) -> list[str]:
    missing = part.get("not_measured") or {}
    return [f"**Not measured: {name}**, not available here: {why}" for name, why in missing.items()]


def _corpus(q: Result) -> str:
    if not q["limit"]:
        return "the whole corpus"
    return f"`--limit {q['limit']}`: every one of the {q['relevant_docs']:,} relevant documents of the queries, then others"


def _models(r: Result) -> list[str]:
    # Two parts measured separately (bench_models --only): each with its own date.
    out: list[str] = []
    if q := r.get("quality"):
        models = q["models"]
        text = q["text_only"]
        rows = [
            *[(f"`embedplat.search` (vector), {name}", m["vector"]) for name, m in models.items()],
            *[
                (f"`embedplat.hybrid_search` (RRF), {name}", m["hybrid_rrf"])
                for name, m in models.items()
            ],
            *(
                [
                    (
                        f"text only (`hybrid_search`, vector_weight 0; chunks of {text['chunks_of']})",
                        text,
                    )
                ]
                if text
                else []
            ),
            *[
                (f"exact in-memory baseline (whole documents), {name}", m["exact_whole_documents"])
                for name, m in models.items()
            ],
        ]
        out += [
            _when(r, q),
            "",
            f"Quality: {q['note']}. The same {q['corpus_docs']:,} SciFact documents ({_corpus(q)}) and {q['queries']} train queries for each model; k = {q['k']}; RRF k = {q['rrf']['k']}, lists {q['rrf']['list_depth']} deep. Full-text search does not use the model, so it ran once. The exact baseline embeds each whole document with the model (cut at its `max_seq_length`) and ranks by exact cosine. Measured with `{q['command']}`.",
            "",
            "| search, model | nDCG@10 | recall@10 | p50 ms | p95 ms |",
            "|---|---:|---:|---:|---:|",
            *[
                f"| {name} | {m['ndcg@10']} | {m['recall@10']} | {m.get('p50_ms', '-')} | {m.get('p95_ms', '-')} |"
                for name, m in rows
            ],
            "",
            "| model | dimensions | max_seq_length | chunks | sync of the corpus s (HNSW build included) | chunks/s (computed) | exact baseline encode s |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *[
                f"| {name} | {m['dimensions']} | {m['max_seq_length']} | {m['chunks']:,} | {m['sync_seconds_index_included']} | {m['sync_chunks_per_second_computed']} | {m['exact_encode_seconds']} |"
                for name, m in models.items()
            ],
            "",
            *[line for line in _not_measured(q) for line in (line, "")],
        ]
    if t := r.get("throughput"):
        models = t["models"]
        out += [
            _when(r, t),
            "",
            f"Embedding throughput on this CPU: {t['note']}. Sample: {t['sample']}. Each run: a fresh database, ingest, sync (batch {t['batch_size']}; {t['sync_options']}), then `SentenceTransformer.encode` of the same chunk texts (raw, batch {t['batch_size']}). {t['runs_per_model']} runs per model, interleaved ({', '.join(t['order'])}); min / median / max over the runs. {'Every model cut the sample into the same chunk texts' if t['same_chunk_texts_across_models'] else 'The models cut the sample into different chunk texts (their tokenizers differ)'}. Measured with `{t['command']}`.",
            "",
            f"| model | chunks | sync chunks/s (computed) | raw encode chunks/s (computed) | sync / raw (medians, computed) | sync speed vs {t['first_model']} (medians, computed) | raw speed vs {t['first_model']} (medians, computed) |",
            "|---|---:|---|---|---:|---:|---:|",
            *[
                f"| {name} | {m['chunks']:,} | {_mmm(m['sync_chunks_per_second_computed'])} | {_mmm(m['raw_chunks_per_second_computed'])} | {m['sync_vs_raw_ratio_of_medians_computed']} | {m['sync_speed_vs_first_model_computed']} | {m['raw_speed_vs_first_model_computed']} |"
                for name, m in models.items()
            ],
            "",
            *[line for line in _not_measured(t) for line in (line, "")],
        ]
    if not out:
        return []
    return ["## Embedding models compared: quality and throughput on SciFact", "", *out]


# -- bench_switch ---------------------------------------------------------------------------------


def _phase_row(name: str, phase: Result) -> str:
    e2e, sql_ms = phase["end_to_end_ms"], phase["sql_ms"]

    def cell(spread: Result) -> str:
        return (
            "-" if not spread.get("n") else f"{spread['p50']} / {spread['p95']} / {spread['max']}"
        )

    models = ", ".join(phase["models"]) or "-"
    return f"| {name} | {phase['seconds']} | {phase['searches']} | {cell(e2e)} | {cell(sql_ms)} | {models} |"


def _switch(r: Result) -> list[str]:
    out: list[str] = ["## Model switch under load", ""]
    if s := r.get("switch"):
        ratio = s["p95_during_backfill_over_before_computed"]
        blocked = s["longest_search_overlapping_swap_ms"]
        out += [
            _when(r, s),
            "",
            f"{s['note']}. {s['records']:,} records ({s['corpus']}; {s['chunks']:,} chunks), embedded with {s['from_model']} and HNSW-indexed, switched to {s['to_model']} while a reader process searched all along (about 4 searches a second: embed the query with the collection's model, `embedplat.search` naming that model, a retry when a swap came between, and the top hit's similarity checked against its stored vector of the same model).",
            "",
            "| measured | value | goal |",
            "|---|---|---|",
            f"| searches | {s['searches']:,} ({s['retried_searches']} retried after a swap) | |",
            f"| failed searches | {s['failed_searches']} | 0 {_met(s['failed_searches'] == 0)} |",
            f"| results of the wrong model | {s['wrong_model_results']} ({s['unverifiable_results']} top hits not checkable: their vectors were purged) | 0 {_met(s['wrong_model_results'] == 0)} |",
            f"| search p95 during the back-fill / before (computed) | end to end {ratio['end_to_end']}, SQL call {ratio['sql']} | ≤ {s['goal_p95_ratio']} (end to end {_met(bool(ratio['end_to_end']) and ratio['end_to_end'] <= s['goal_p95_ratio'])}, SQL {_met(bool(ratio['sql']) and ratio['sql'] <= s['goal_p95_ratio'])}) |",
            f"| the swap (`model_switch_complete`) | {s['swap_seconds'] * 1000:.1f} ms; {s['searches_overlapping_swap']} searches overlapped it, the longest {blocked if blocked is not None else '-'} ms | < {s['goal_swap_blocked_seconds']} s of blocked searches {_met(s['swap_seconds'] < s['goal_swap_blocked_seconds'])} |",
            f"| back-fill | {s['backfill_chunks']:,} chunks in {s['backfill_seconds']} s ({s['backfill_chunks_per_second_computed']} chunks/s, computed) | |",
            f"| target's HNSW build (concurrently) | {s['index_build_seconds']} s | |",
            f"| total switch, start to swap (computed) | {s['total_switch_seconds_computed']} s | |",
            f"| purge of the old vectors after the grace period | {s['purged_vectors']:,} vectors in {s['purge_seconds']} s | |",
            "",
            "Search latency per phase, ms (p50 / p95 / max); end to end includes embedding the query on the same two cores as the back-fill:",
            "",
            "| phase | s | searches | end to end | SQL call | models answering |",
            "|---|---:|---:|---|---|---|",
            *[_phase_row(name, phase) for name, phase in s["phases"].items()],
            "",
        ]
    if v := r.get("variant"):
        c = v["cosine_to_original_computed"]
        out += [
            _when(r, v),
            "",
            f"A switch to a variant of the same model: {v['records']:,} records, {v['from_model']} (fingerprint {v['fingerprints'][v['from_model']]}) to {v['to_model']} (another fingerprint). Chunks reused: **{v['chunks_reused']}**; re-embedded: {v['chunks_reembedded']:,}, switched in {v['switch_seconds']} s. The variant's vectors against the original's (cosine, computed): min {c['min']}, median {c['median']}, {c['below_0_9999']} of {c['pairs']:,} below 0.9999{' (the vectors agree where a text fits in 128 tokens)' if c['below_0_9999'] == 0 else ''}; whatever the vectors, other files are another model, so nothing was reused.",
            "",
        ]
    return out if len(out) > 2 else []


# -- bench_backends -------------------------------------------------------------------------------


def _cpu_line(cpu: Result) -> str:
    flags = cpu["flags"]
    have = [f for f, on in flags.items() if on]
    lack = [f for f, on in flags.items() if not on]
    return (
        f"CPU: {cpu['model_name']}, {cpu['cpus']} CPUs; has {', '.join(have) or 'none of them'}; "
        f"lacks {', '.join(lack) or 'none'}"
    )


def _others(entry: Result) -> str:
    v = sorted(run["other_cpu_seconds_computed"] for run in entry["runs"])
    median = round((v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2, 2)
    return f"{v[0]} / {median} / {v[-1]}"


def _disturbed(c: Result) -> str:
    """The runs during which other processes used at least half a CPU on average."""
    hits = [
        f"{name} run {run['run']} ({run['other_cpu_seconds_computed']} s in {run['seconds']} s)"
        for name, e in c["entries"].items()
        for run in e["runs"]
        if run["other_cpu_seconds_computed"] >= 0.5 * run["seconds"]
    ]
    if not hits:
        return "No run had other processes using half a CPU or more."
    return (
        "Runs during which other processes used half a CPU or more (computed): "
        + "; ".join(hits)
        + "."
    )


def _backend_rows(c: Result) -> list[str]:
    raw = c["entries"]["raw-torch"]
    rows = [
        f"| raw torch: `SentenceTransformer.encode` script, whole process | {_mmm(raw['seconds'])} | {_mmm(raw['chunks_per_second_computed'])} | 1 | | {_mmm(raw['cpu_ms_per_chunk_computed'])} | {raw['max_rss_mb']['median']} | {_others(raw)} |",
        f"| raw torch: its `encode` call alone | {_mmm(raw['encode_seconds'])} | {_mmm(raw['encode_chunks_per_second_computed'])} | | | | | |",
    ]
    for name, e in c["entries"].items():
        if name == "raw-torch":
            continue
        ratio = e["vs_raw_process_computed"]
        rows.append(
            f"| `embedplat sync`, {name} | {_mmm(e['seconds'])} | {_mmm(e['chunks_per_second_computed'])} | **{ratio['median']}** ({', '.join(map(str, ratio['per_run']))}): {_met(e['goal_met'])} | {e['vs_raw_encode_computed']['median']} | {_mmm(e['cpu_ms_per_chunk_computed'])} | {e['max_rss_mb']['median']} | {_others(e)} |"
        )
    return rows


def _profile_rows(profile: Result) -> list[str]:
    return [
        f"| {name} | {p['process_seconds_profiled']} | {p['model_load']} | {p['chunk_stale_records']} | {p['claim_chunks']} | {p['embed (model calls)']} | {p['store_vectors']} | {p['build_index']} | {p['outside_sync_collection_computed']} |"
        for name, p in profile.items()
    ]


def _cos(c: Result) -> str:
    return f"{c['median']} / {c['p1']} / {c['min']}"


def _ndcgs(v: Result) -> str:
    parts = [
        v.get(key, {}).get("ndcg@10", "-")
        for key in (
            "scifact_exact_whole_documents",
            "scifact_embedplat_vector",
            "scifact_embedplat_hybrid",
        )
    ]
    return " / ".join(str(p) for p in parts)


def _aucs(v: Result) -> str:
    auc = v.get("agnews_anomaly_roc_auc_exact_knn")
    return f"{auc['within_collection']} / {auc['against_reference']}" if auc else "-"


def _quality_bounds(v: Result, torch: Result) -> str:
    """Issue 13's quality bounds for a variant against torch: "met", or what missed."""
    missed = [
        f"cosine {corpus}"
        for corpus in ("short", "scifact_chunks")
        if v[f"cosine_to_torch_{corpus}"]["median"] < 0.99
        or v[f"cosine_to_torch_{corpus}"]["p1"] < 0.97
    ]
    pairs = [("MRPC AP", v.get("mrpc_average_precision"), torch.get("mrpc_average_precision"))]
    for key, label in (
        ("scifact_embedplat_vector", "nDCG vector"),
        ("scifact_embedplat_hybrid", "nDCG hybrid"),
    ):
        pairs.append((label, v.get(key, {}).get("ndcg@10"), torch.get(key, {}).get("ndcg@10")))
    for setup in ("within_collection", "against_reference"):
        pairs.append(
            (
                f"AG News {setup}",
                v.get("agnews_anomaly_roc_auc_exact_knn", {}).get(setup),
                torch.get("agnews_anomaly_roc_auc_exact_knn", {}).get(setup),
            )
        )
    unmeasured = [label for label, mine, ref in pairs if mine is None or ref is None]
    missed += [
        label
        for label, mine, ref in pairs
        if mine is not None and ref is not None and abs(mine - ref) > 0.01
    ]
    if missed:
        return "**missed**: " + ", ".join(missed)
    return "met" + (f" (not measured: {', '.join(unmeasured)})" if unmeasured else "")


def _backends(r: Result) -> list[str]:
    # Three parts measured separately (bench_backends --only): each with its own date.
    out: list[str] = []
    if t := r.get("throughput"):
        loads = sorted(
            run["load_1m_at_start"]
            for c in t["corpora"].values()
            for e in c["entries"].values()
            for run in e["runs"]
        )
        out += [
            _when(r, t),
            "",
            f"Throughput, {t['note']}. {_cpu_line(t['cpu'])}. Model {t['model']}, batch {t['batch_size']}, runtime threads: {t['threads']}. Every figure is a whole process started from Python (interpreter start, imports, model load, the work, exit): raw torch is a script that loads `SentenceTransformer` from the bundled model files and encodes exactly the chunk texts embedplat stored for the corpus; `embedplat sync COLLECTION --json` runs on a collection made for that run with `collection create --backend` and `embedplat ingest` (untimed, then VACUUM ANALYZE and CHECKPOINT), its HNSW build included. Exports are made before any timing. {t['runs']} runs, alternating order ({'; '.join(c['order'][0] for c in list(t['corpora'].values())[:1])}, then reversed, ...); min / median / max over the runs. *vs raw torch* = raw torch process seconds / sync seconds of the same run (computed; median, then each run); *vs encode alone* = the raw script's `encode` call alone / sync seconds (median). CPU = user + system seconds of the process itself (`os.wait4`). *Others' CPU s* = the machine's busy CPU seconds during the process (`/proc/stat`) minus its own: the other engineer's work, and for a sync the database server's. Load average (1 min) at the start of the timed processes: {loads[0]} to {loads[-1]}. Measured with `{t['command']}`.",
            "",
            "Exports (one process per backend, before timing; the export's own seconds from its manifest):",
            "",
            "| backend | process s | export s | peak RSS MB |",
            "|---|---:|---:|---:|",
            *[
                f"| {name} | {e['process_seconds']} | {e['export_seconds_manifest']} | {e['max_rss_mb']} |"
                for name, e in t["exports"].items()
            ],
            "",
        ]
        for corpus, c in t["corpora"].items():
            out += [
                f"**{corpus}**: {t['corpora_how'][corpus]}: {c['records']:,} records → {c['chunks']:,} chunks ({c['tokens_note']}). Goal: sync ≥ {c['goal_vs_raw_torch']} times raw torch's speed (median of the runs).",
                "",
                "| process | seconds | chunks/s (computed) | vs raw torch (computed): median (per run) | vs encode alone (computed) | CPU ms per chunk (computed) | peak RSS MB (median) | others' CPU s (min / median / max) |",
                "|---|---|---|---|---:|---|---:|---|",
                *_backend_rows(c),
                "",
                _disturbed(c),
                "",
            ]
        if t.get("profile"):
            out += [
                "Where a sync's time goes: one more `embedplat sync` of the **short** corpus per backend under cProfile (untimed, a single run each on the shared machine, so as noisy as one run above; cumulative seconds; profiling slows the Python parts, so read the shares). *Outside the sync* = interpreter start, imports and the CLI around `sync_collection`.",
                "",
                "| backend | process s (profiled) | model load | chunking | claims | embedding (model calls) | storing vectors | HNSW build | outside the sync |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
                *_profile_rows(t["profile"]),
                "",
            ]
    if n := r.get("noop"):
        out += [
            _when(r, n),
            "",
            f"No-op sync, whole command, {n['note']}: `embedplat sync COLLECTION --json` on {n['corpus']}, fully synced and indexed beforehand; runs alternate ({n['order'][0]}, then reversed, ...); min / median / max. Goal ≤ {n['goal_seconds']} s. *In sync* = the report's own seconds (the rest is interpreter start, imports and the CLI). Measured with `{n['command']}`.",
            "",
            "| backend | seconds | in sync s | CPU s | peak RSS MB | chunks embedded per run | goal: every run ≤ 1 s | median ≤ 1 s |",
            "|---|---|---|---|---|---|---|---|",
            *[
                f"| {name} | {_mmm(b['seconds'])} | {_mmm(b['report_seconds'])} | {_mmm(b['cpu_seconds'])} | {_mmm(b['max_rss_mb'])} | {b['chunks_embedded_all']} | {_met(b['goal_met'])} | {_met(b['seconds']['median'] <= n['goal_seconds'])} |"
                for name, b in n["backends"].items()
            ],
            "",
        ]
    if q := r.get("quality"):
        nd = q.get("ndcg")
        ndcg_how = (
            f" SciFact: {nd['how']}; {nd['corpus_docs']:,} documents, {nd['queries']} train queries, k = {nd['k']}."
            if nd
            else " SciFact nDCG not measured."
        )
        out += [
            _when(r, q),
            "",
            f"Quality, in-process, {q['note']}: each variant's vectors against torch's on the same texts (cosine per text: median / 1st percentile / min): {q['short_texts']:,} MRPC sentences (the short corpus) and {q['scifact_chunks']:,} SciFact chunks as embedplat cuts them. MRPC average precision of the {q['mrpc_pairs']:,} pairs ({q['mrpc_positive_pairs']:,} paraphrases) whose two sentences are both in the short corpus, cosine as the score.{ndcg_how} Measured with `{q['command']}`.",
            "",
            "| variant | cosine to torch, MRPC sentences | cosine to torch, SciFact chunks | MRPC AP | SciFact nDCG@10: exact / embedplat vector / hybrid | AG News anomaly ROC-AUC, exact k-NN: within / against reference | every quality bound (computed) |",
            "|---|---|---|---:|---|---|---|",
            *[
                f"| {v['model']} | {_cos(v['cosine_to_torch_short'])} | {_cos(v['cosine_to_torch_scifact_chunks'])} | {v['mrpc_average_precision']} | {_ndcgs(v)} | {_aucs(v)} | {_quality_bounds(v, q['variants']['torch'])} |"
                for v in q["variants"].values()
            ],
            "",
            "Bounds (issue 13), each against torch's figure: cosine median ≥ 0.99 and 1st percentile ≥ 0.97 on both corpora; MRPC AP, SciFact nDCG@10 (vector and hybrid) and AG News ROC-AUC (both setups) within 0.01."
            + (
                f" AG News: {q['agnews']['records']:,} records, {q['agnews']['anomalies']} anomalies, k = {q['agnews']['k']}; {q['agnews']['how']}."
                if q.get("agnews")
                else ""
            ),
            "",
        ]
    if not out:
        return []
    return [
        "## Inference backends: whole-process `embedplat sync` vs. raw PyTorch (ONNX Runtime, OpenVINO)",
        "",
        *out,
    ]


# -- the report -----------------------------------------------------------------------------------

Renderer = Callable[[Result], list[str]]


@dataclass(frozen=True)
class Section:
    """A results file, how it is rendered, and what reproduces it."""

    name: str
    render: Renderer
    commands: tuple[str, ...]
    data: str | None = None  # the folder of ../shared/data it reads, if any


def _query_latency(r: Result) -> list[str]:
    goals = r["goals"]
    out = [
        "## Search by text per backend: quiet, and beside one busy core",
        "",
        _when(r),
        "",
        f"`Platform.search` by text (query embedding + `embedplat.search`, k = {r['k']}) on "
        f"{r['documents']:,} SciFact documents, {r['queries']:,} SciFact claims, each backend in "
        "turn on the same claim; then again while one process spins on one of the two cores. "
        f"Goals: p50 ≤ {goals['p50_ms']:g} ms and p99 ≤ {goals['p99_over_p50']:g} x p50 in both "
        f"conditions; the first query of a fresh process ≤ {goals['first_query_ms']:g} ms after "
        "its model is loaded. Load average at start: "
        f"{r['load_average_at_start']:.2f}.",
        "",
        "| backend | quiet p50 / p95 / p99 / max ms | p99/p50 (computed) | one busy core p50 / p95 / p99 / max ms | p99/p50 (computed) | model load s | first query ms |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for backend, b in r["backends"].items():
        q, busy = b["quiet"]["search_by_text"], b["one_busy_core"]["search_by_text"]
        first = b["first_query"]
        out.append(
            f"| {backend} | {q['p50_ms']} / {q['p95_ms']} / {q['p99_ms']} / {q['max_ms']} | "
            f"{q['p99_over_p50_computed']} | {busy['p50_ms']} / {busy['p95_ms']} / "
            f"{busy['p99_ms']} / {busy['max_ms']} | {busy['p99_over_p50_computed']} | "
            f"{first['model_load_s']} | {first['first_query_ms']} |"
        )
    out.append("")
    return out


def _scale(r: Result) -> list[str]:
    sizes = sorted(
        (k for k in r if k.startswith("n") and k[1:].isdigit()), key=lambda k: int(k[1:])
    )
    if not sizes:
        return []
    parts = [r[k] for k in sizes]
    first = parts[0]

    def row(label: str, cell: Callable[[Result], Any], goal: str = "") -> str:
        return f"| {label} | " + " | ".join(str(cell(p)) for p in parts) + f" | {goal} |"

    g = first["goals"]
    out = [
        "## Every SQL function at scale (one collection, float32 `vector` storage)",
        "",
        *[_when(r, p) + f" ({p['chunks']:,} chunks)" for p in parts],
        "",
        f"Data: {first['data']}. {first['queries']} queries of the same distribution, exact "
        "answers computed in the same run with numpy. Every figure is measured except those "
        "labelled computed. Commands: "
        + "; ".join(f"`{p['command']}` ({p['seconds']:.0f} s)" for p in parts)
        + ".",
        "",
        "| measure | "
        + " | ".join(f"{p['chunks']:,} chunks" for p in parts)
        + " | goal at 1,000,000 |",
        "|---|" + "---|" * len(parts) + "---|",
        row("load (binary COPY), s", lambda p: p["load_seconds"]),
        row(
            "HNSW build, s (m 16, ef_construction 64)",
            lambda p: (
                f"{p['hnsw_build']['seconds']} (maintenance_work_mem {p['hnsw_build']['maintenance_work_mem']})"
            ),
            g["hnsw_build"],
        ),
        row(
            "search: recall@10 / p50 / p95 ms",
            lambda p: (
                f"{p['search']['recall@10']} / {p['search']['p50_ms']} / {p['search']['p95_ms']}"
            ),
            g["search"],
        ),
        row(
            "filtered search, 1 %: rows (min) / recall@10 / p50 / p95 ms",
            lambda p: (
                f"{p['filtered_1_percent']['rows_returned_min']} / "
                f"{p['filtered_1_percent']['recall@10']} / {p['filtered_1_percent']['p50_ms']} / "
                f"{p['filtered_1_percent']['p95_ms']}"
            ),
            g["filtered"],
        ),
        row(
            "hybrid search p50 / p95 ms",
            lambda p: f"{p['hybrid_search']['p50_ms']} / {p['hybrid_search']['p95_ms']}",
            g["hybrid"],
        ),
        row(
            "near_duplicates: s / pairs / pair recall / precision",
            lambda p: (
                f"{p['near_duplicates']['seconds']} / {p['near_duplicates']['pairs_found']:,} / "
                f"{p['near_duplicates']['pair_recall']} / {p['near_duplicates'].get('precision', '-')}"
            ),
            g["near_duplicates"],
        ),
        row(
            "anomaly_scores: s / Spearman vs exact k-NN (2,000-record sample)",
            lambda p: (
                f"{p['anomaly_scores']['seconds']} / "
                f"{p['anomaly_scores']['spearman_vs_exact_knn_sample']}"
            ),
            g["anomaly_scores"],
        ),
        row(
            "`embedplat ingest` of as many short records, whole command: s / records/s (computed)",
            lambda p: (
                f"{p['ingest_short_records']['whole_command_seconds']} / "
                f"{p['ingest_short_records']['records_per_second_computed']:,}"
            ),
            g["ingest"],
        ),
        row(
            "no-op `embedplat sync`, whole command, s",
            lambda p: p["noop_sync"]["whole_command_seconds"],
            g["noop_sync"],
        ),
        row(
            "bytes per chunk (computed): records + chunks + embeddings with indexes / HNSW / whole database",
            lambda p: (
                f"{p['bytes_per_chunk']['records_chunks_embeddings_with_indexes']:,} / "
                f"{p['bytes_per_chunk']['hnsw_index']:,} / {p['bytes_per_chunk']['whole_database']:,}"
            ),
            "report per storage kind",
        ),
        "",
        "The texts are whole SciFact abstracts (about 1.5 kB each), which with their tsvector "
        "dominate the bytes per chunk; the 384-d float32 vector is 1,544 bytes of it.",
        "",
    ]
    return out


SECTIONS: list[Section] = [
    Section("ingest", _ingest, ("python -m benchmarks.bench_ingest",)),
    Section(
        "sync_throughput",
        _sync_throughput,
        ("python -m benchmarks.bench_sync --only throughput",),
        "scifact",
    ),
    Section(
        "sync_incremental",
        _sync_incremental,
        ("python -m benchmarks.bench_sync --only incremental",),
        "scifact",
    ),
    Section("sync_noop", _sync_noop, ("python -m benchmarks.bench_sync --only noop",)),
    Section("sync_index", _sync_index, ("python -m benchmarks.bench_sync --only index",)),
    Section(
        "retrieval_scifact",
        _retrieval,
        ("python -m benchmarks.bench_retrieval  # also writes hybrid_scifact",),
        "scifact",
    ),
    Section("search_latency", _search_latency, ("python -m benchmarks.bench_search",)),
    Section(
        "search_latency_isotropic",
        _search_latency,
        ("python -m benchmarks.bench_search --isotropic",),
    ),
    Section(
        "hybrid_scifact",
        _hybrid,
        ("python -m benchmarks.bench_retrieval  # also writes retrieval_scifact",),
        "scifact",
    ),
    Section(
        "models_scifact",
        _models,
        (
            "python -m benchmarks.bench_models --only quality",
            "python -m benchmarks.bench_models --only throughput",
        ),
        "scifact",
    ),
    Section(
        "calibration", _calibration, ("python -m benchmarks.calibrate_duplicates",), "mrpc, sick"
    ),
    Section(
        "duplicates",
        _duplicates,
        ("python -m benchmarks.bench_analytics --only scale  # also the anomalies' speed part",),
    ),
    Section(
        "anomalies",
        _anomalies,
        (
            "python -m benchmarks.bench_analytics --only scale   # speed (and duplicates)",
            "python -m benchmarks.bench_analytics --only agnews  # quality",
        ),
        "agnews",
    ),
    Section(
        "workers",
        _workers,
        (
            "python -m benchmarks.bench_workers --only throughput",
            "python -m benchmarks.bench_workers --only latency",
        ),
        "scifact",
    ),
    Section(
        "attach",
        _attach,
        (
            "python -m benchmarks.bench_attach --only overhead",
            "python -m benchmarks.bench_attach --only backfill",
        ),
        "scifact",
    ),
    Section(
        "chunking",
        lambda r: ["## Chunking time vs record size", "", chunking_markdown(r), ""],
        ("python -m benchmarks.bench_chunking",),
        "scifact",
    ),
    Section(
        "switch",
        _switch,
        (
            "python -m benchmarks.bench_switch --only switch",
            "python -m benchmarks.bench_switch --only variant",
        ),
        "mrpc",
    ),
    Section(
        "pgai",
        lambda r: [
            "## Attached table vs. pgai's vectorizer (same table, same model)",
            "",
            _when(r),
            "",
            pgai_markdown(r),
            "",
        ],
        ("python -m benchmarks.bench_pgai",),
        "scifact",
    ),
    Section(
        "backends",
        _backends,
        (
            "python -m benchmarks.bench_backends --only throughput",
            "python -m benchmarks.bench_backends --only noop",
            "python -m benchmarks.bench_backends --only quality",
        ),
        "mrpc, scifact",
    ),
    Section(
        "query_latency",
        _query_latency,
        ("python -m benchmarks.bench_query_latency",),
        "scifact",
    ),
    Section("scale", _scale, ("python -m benchmarks.bench_scale",), "scifact"),
    Section(
        "langchain",
        lambda r: [
            "## Per document vs. langchain-postgres's PGVectorStore (same model, same documents)",
            "",
            _when(r),
            "",
            langchain_markdown(r),
            "",
        ],
        ("python -m benchmarks.bench_langchain",),
        "scifact",
    ),
]


def _reproduce(section: Section) -> list[str]:
    data = (
        " and reads " + ", ".join(f"`../shared/data/{d.strip()}`" for d in section.data.split(","))
        if section.data
        else ""
    )
    return [
        f"Reproduce from the repository root (writes `results/{section.name}.json`{data}):",
        "",
        "```sh",
        *section.commands,
        "```",
        "",
    ]


def render() -> str:
    out = [
        "# Benchmark results",
        "",
        "Rendered by `python -m benchmarks.run --report` from `benchmarks/results/*.json`; each "
        "section says when it was measured (a file whose parts were measured by separate runs "
        "dates each part) and the command that reproduces it.",
        "",
        "Run the benchmarks from the repository root in the project's virtual environment "
        "(`scripts/_venv.sh model,workers` makes one) with `HF_HUB_OFFLINE=1`. The ones on real "
        "text read it from `../shared/data/` relative to the repository root (SciFact, MRPC, "
        "SICK, AG News; see its README), or from the folder named by `EMBEDPLAT_BENCH_DATA`. "
        "PostgreSQL is a benchmark-only embedded server under `benchmarks/.work`, or "
        "`EMBEDPLAT_BENCH_DATABASE_URL`. `python -m benchmarks.run [suite ...]` runs whole suites "
        "(`python -m benchmarks.run --help` lists them).",
        "",
    ]
    for section in SECTIONS:
        result = _load(section.name)
        if result is None:
            continue
        try:
            lines = section.render(result)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            # A file from another version of its benchmark: show it rather than fail.
            lines = _raw(section.name, result)
        if lines:
            # Right under the section's heading.
            out += [*lines[:2], *_reproduce(section), *lines[2:]]
    known = {section.name for section in SECTIONS}
    for extra in sorted(RESULTS.glob("*.json")):
        if extra.stem not in known:
            out += _raw(extra.stem, json.loads(extra.read_text()))
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
            for command in SUITES[suite]:
                subprocess.run([sys.executable, "-m", *command], check=True, cwd=HERE.parent)
    report = RESULTS.parent / "RESULTS.md"  # benchmarks/RESULTS.md unless redirected
    report.write_text(render())
    print(report)


if __name__ == "__main__":
    main()
