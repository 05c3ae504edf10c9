"""Celery workers: embedding throughput with 1 and 2 worker processes, and NOTIFY latency.

* ``throughput``: the same SciFact backlog (title + abstract, ~600 chunks of <= 200 tokens),
  embedded with the real model (all-MiniLM-L6-v2, CPU) by (a) one in-process
  ``embedplat sync``, (b) one Celery worker process, (c) two worker processes, (d) two worker
  processes with one torch thread each. Workers are started and their model loaded (a warm-up
  collection) before the clock starts; the clock runs from sending one sync task to the moment
  the last chunk's vector is stored. Each run uses a fresh database.
* ``latency``: change → searchable through the NOTIFY path (trigger → listener → debounced
  task → worker → ``embedplat.search`` finds the record), with the periodic sweep disabled:
  100 new records, one after another, p50/p95/max. Uses a deterministic hash embedder
  (``bench-hash-64``, benchmarks/hash_embedder.py): the model's own time is in the throughput
  figures, and the point here is the wake-up path. Measured with the default debounce (0.5 s)
  and with 0.1 s.

A private redis-server is started on a free port; PostgreSQL is the benchmark embedded server
(or ``EMBEDPLAT_BENCH_DATABASE_URL``).

Throughput reports min / median / max of ``--repeat`` (at least 3) interleaved runs per mode.
Each part of results/workers.json carries its own date, so ``--only`` keeps the other part
with the date it was measured.

    python -m benchmarks.bench_workers                       # both, ~15 minutes on 2 cores
    python -m benchmarks.bench_workers --only throughput --chunks 600 --repeat 3
    python -m benchmarks.bench_workers --only latency --changes 100
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from embedplat.api import Platform
from embedplat.chunking import chunk_text
from embedplat.db.connection import libpq_url
from embedplat.db.vectors import vector_literal
from embedplat.embedders import load_embedder
from embedplat.embedders.backends import BACKENDS, variant_name
from embedplat.sync import SyncOptions, sync

from .common import (
    WORK,
    fresh_database,
    measured_line,
    require_data,
    server,
    settings,
    write_parts,
)
from .hash_embedder import BenchHashEmbedder, model_name, plugin_env

MODEL = "all-MiniLM-L6-v2"
TEST_MODEL = model_name(64)
BATCH = 32  # texts per model call; a task claims 4 x BATCH chunks per round, one round
CHUNK_TOKENS, CHUNK_OVERLAP = 200, 32
CELERY = Path(sys.executable).with_name("celery")
LOGS = WORK / "workers"


# -- processes ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    try:
        _wait(answers, 20, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


class Processes:
    """Worker/listener processes of one run, stopped (their process groups killed) at exit."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        LOGS.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], extra: dict[str, str] | None = None) -> Path:
        log = LOGS / f"{name}.log"
        log.unlink(missing_ok=True)
        proc = subprocess.Popen(
            argv,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**self.env, **(extra or {})},
            start_new_session=True,
        )
        self.procs.append((proc, log))
        return log

    def worker(self, name: str, extra: dict[str, str] | None = None) -> Path:
        log = self.start(
            name,
            [
                str(CELERY),
                "-A",
                "embedplat_workers.app",
                "worker",
                "--pool=solo",
                "-n",
                f"{name}@%h",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            extra,
        )
        _wait(lambda: " ready." in log.read_text(errors="replace"), 120, f"{name} to start")
        return log

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc, _ in self.procs:
            proc.wait()


def _env(db_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDPLAT_")}
    env.update(
        EMBEDPLAT_DATABASE_URL=db_url,
        EMBEDPLAT_BROKER_URL=broker_url,
        EMBEDPLAT_HOME=str(WORK / "home"),
        EMBEDPLAT_SWEEP_SECONDS="0",
        EMBEDPLAT_BATCH_SIZE=str(BATCH),
        EMBEDPLAT_TASK_ROUNDS="1",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        **plugin_env(),  # the workers of the latency part embed with bench-hash-64
        **extra,
    )
    return env


def _celery_client(broker_url: str) -> Any:
    from embedplat.config import Settings
    from embedplat_workers.app import create_app
    from embedplat_workers.settings import WorkerSettings

    return create_app(WorkerSettings(base=Settings(broker_url=broker_url)))


def _embedded(conn: psycopg.Connection[Any], collection: str) -> tuple[int, int]:
    """(chunks with a current vector, chunks) of a collection.

    ``conn`` is one autocommit connection kept for all the polling: a new connection per poll
    costs a server process fork each time, which on 2 cores slows the workers being measured.
    """
    row = conn.execute(
        "SELECT (SELECT count(*) FROM embedplat.embeddings e JOIN embedplat.chunks ch "
        "          ON ch.id = e.chunk_id AND ch.text_hash = e.text_hash"
        "        WHERE e.collection_id = c.id),"
        "       (SELECT count(*) FROM embedplat.chunks ch WHERE ch.collection_id = c.id),"
        "       (SELECT count(*) FROM embedplat.records r WHERE r.collection_id = c.id"
        "          AND r.chunked_hash IS DISTINCT FROM r.content_hash) "
        "FROM embedplat.collections c WHERE c.name = %s",
        (collection,),
    ).fetchone()
    assert row is not None
    done, chunks, stale_records = (int(x) for x in row)
    return (done, chunks) if stale_records == 0 else (0, -1)


def _embedded_per_worker(logs: list[Path]) -> list[int]:
    return [
        sum(
            int(n) for n in re.findall(r"'chunks_embedded': (\d+)", log.read_text(errors="replace"))
        )
        for log in logs
    ]


# -- throughput ---------------------------------------------------------------------------------


def scifact_rows(target_chunks: int) -> tuple[list[dict[str, str]], int]:
    """SciFact documents (title + abstract) until they make ``target_chunks`` chunks."""
    counter = load_embedder(MODEL, batch_size=BATCH).token_counter()
    rows: list[dict[str, str]] = []
    chunks = 0
    with require_data("scifact", "corpus.jsonl").open() as fh:
        for line in fh:
            doc = json.loads(line)
            if not doc.get("text"):
                continue
            text = f"{doc['title']}\n\n{doc['text']}"
            rows.append({"id": str(doc["_id"] if "_id" in doc else doc["id"]), "text": text})
            chunks += len(
                chunk_text(text, max_tokens=CHUNK_TOKENS, overlap=CHUNK_OVERLAP, counter=counter)
            )
            if chunks >= target_chunks:
                break
    return rows, chunks


def _load(platform: Platform, name: str, rows: list[dict[str, str]], model: str = MODEL) -> None:
    platform.create_collection(
        name, model=model, chunk_tokens=CHUNK_TOKENS, chunk_overlap=CHUNK_OVERLAP
    )
    platform.ingest(name, rows)


def run_in_process(server_url: str, rows: list[dict[str, str]], model: str) -> dict[str, Any]:
    embedder = load_embedder(model, batch_size=BATCH)
    embedder.embed(["warm up the model"] * 8)
    with fresh_database(server_url) as db, Platform(db, settings()) as platform:
        _load(platform, "scifact", rows, model)
        start = time.perf_counter()
        report = sync(
            lambda: psycopg.connect(libpq_url(db)),
            lambda name: embedder,
            "scifact",
            SyncOptions(batch_size=BATCH, build_index=False),
        )
        seconds = time.perf_counter() - start
    return {
        "mode": "in-process `embedplat sync`",
        "processes": 1,
        "torch_threads": "default",
        "chunks": report.chunks_embedded,
        "seconds": round(seconds, 2),
        "chunks_per_second": round(report.chunks_embedded / seconds, 1),
    }


def run_workers(
    server_url: str, rows: list[dict[str, str]], workers: int, threads: int | None, model: str
) -> dict[str, Any]:
    # torch reads OMP_NUM_THREADS, the ONNX Runtime and OpenVINO backends EMBEDPLAT_THREADS.
    extra = {"OMP_NUM_THREADS": str(threads), "EMBEDPLAT_THREADS": str(threads)} if threads else {}
    with (
        fresh_database(server_url) as db,
        redis_server() as broker,
        Platform(db, settings()) as platform,
        psycopg.connect(libpq_url(db), autocommit=True) as poll,
    ):
        procs = Processes(_env(db, broker, **extra))
        client = _celery_client(broker)
        try:
            logs = [procs.worker(f"bench-w{i}") for i in range(1, workers + 1)]
            # Warm-up: short texts, enough tasks that every worker loads the model.
            warm = [
                {"id": f"w{i}", "text": f"warm-up sentence number {i}"}
                for i in range(4 * BATCH * 2 * workers)
            ]
            _load(platform, "warmup", warm, model)
            for _ in range(workers):
                client.send_task("embedplat.sync_collection", args=["warmup"])
            _wait(lambda: _embedded(poll, "warmup")[0] == len(warm), 300, "the warm-up")
            # A task logs its report just after its last write: wait for the logs to agree.
            _wait(lambda: sum(_embedded_per_worker(logs)) == len(warm), 60, "warm-up logs")
            warm_split = _embedded_per_worker(logs)
            if not all(warm_split):
                raise SystemExit(f"a worker did not take part in the warm-up: {warm_split}")

            _load(platform, "scifact", rows, model)
            start = time.perf_counter()
            client.send_task("embedplat.sync_collection", args=["scifact"])

            def backlog_done() -> bool:
                done, chunks = _embedded(poll, "scifact")
                return done == chunks and chunks > 0

            done = _wait(backlog_done, 600, "the backlog", every=0.1)
            seconds = time.perf_counter() - start
            assert done
            chunks = _embedded(poll, "scifact")[1]
            _wait(lambda: sum(_embedded_per_worker(logs)) == len(warm) + chunks, 60, "the logs")
            split = [a - b for a, b in zip(_embedded_per_worker(logs), warm_split, strict=True)]
        finally:
            client.close()
            procs.stop()
    return {
        "mode": f"{workers} Celery worker process{'es' if workers > 1 else ''} (solo pool)",
        "processes": workers,
        "torch_threads": threads or "default",
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "chunks_per_second": round(chunks / seconds, 1),
        "chunks_per_worker": split,
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def throughput(server_url: str, target_chunks: int, repeat: int, backend: str) -> dict[str, Any]:
    """Every mode ``repeat`` times, interleaved (the machine is shared, so a busy spell hits
    every mode alike); min, median and max of each mode are reported, and every run."""
    rows, chunks = scifact_rows(target_chunks)
    model = variant_name(MODEL, backend)
    modes: list[tuple[int, int | None]] = [(0, None), (1, None), (2, None), (2, 1)]
    samples: dict[tuple[int, int | None], list[dict[str, Any]]] = {m: [] for m in modes}
    for _ in range(repeat):
        for workers, threads in modes:
            if workers == 0:
                run = run_in_process(server_url, rows, model)
            else:
                run = run_workers(server_url, rows, workers, threads, model)
            run["load_average_1m"] = round(os.getloadavg()[0], 2)
            samples[(workers, threads)].append(run)
            print(run, flush=True)
    runs = []
    for mode in modes:
        tries = samples[mode]
        first = tries[0]
        runs.append(
            {
                "mode": first["mode"],
                "processes": first["processes"],
                "torch_threads": first["torch_threads"],
                "chunks": first["chunks"],
                "chunks_per_second": _spread([r["chunks_per_second"] for r in tries]),
                "seconds": _spread([r["seconds"] for r in tries]),
                # Every run, in the order measured: its own figures and split between workers.
                "runs": [
                    {k: r[k] for k in r if k not in ("mode", "processes", "torch_threads")}
                    for r in tries
                ],
            }
        )
    return {
        "model": model,
        "backend": backend,
        "device": "cpu",
        "docs": len(rows),
        "chunks": chunks,
        "batch_size": BATCH,
        "task_rounds": 1,
        "repeat": repeat,
        "statistic": f"min / median / max of {repeat} interleaved runs",
        "runs": runs,
    }


# -- NOTIFY latency -----------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def notify_latency(server_url: str, changes: int, debounce: float) -> dict[str, Any]:
    embedder = BenchHashEmbedder(64)
    latencies: list[float] = []
    with (
        fresh_database(server_url) as db,
        redis_server() as broker,
        Platform(db, settings()) as platform,
    ):
        platform.create_collection("live", model=TEST_MODEL)
        platform.ingest("live", [{"id": "seed", "text": "the first record"}])
        platform.sync("live")
        procs = Processes(_env(db, broker, EMBEDPLAT_NOTIFY_DEBOUNCE_SECONDS=str(debounce)))
        try:
            worker_log = procs.worker("latency-worker")
            listener_log = procs.start(
                "latency-listener", [sys.executable, "-m", "embedplat_workers.listener"]
            )
            _wait(
                lambda: "listening on" in listener_log.read_text(errors="replace"),
                60,
                "the listener",
            )
            _wait(
                lambda: worker_log.read_text(errors="replace").count("embedplat.sweep[") >= 2,
                60,
                "the listener's catch-up sweep",
            )
            with psycopg.connect(libpq_url(db), autocommit=True) as conn:
                for i in range(changes):
                    text = f"change {i}: " + " ".join(f"word{i}x{j}" for j in range(12))
                    vector = vector_literal(embedder.embed([text])[0])
                    start = time.perf_counter()
                    platform.ingest("live", [{"id": f"c{i}", "text": text}])

                    def found(vector: str = vector, want: str = f"c{i}") -> bool:
                        row = conn.execute(
                            "SELECT id FROM embedplat.search('live', %s::vector, 1)", (vector,)
                        ).fetchone()
                        return row is not None and row[0] == want

                    _wait(found, 30, f"change {i} to be searchable", every=0.005)
                    latencies.append(time.perf_counter() - start)
                    time.sleep(0.05)
        finally:
            procs.stop()
    return {
        "embedder": TEST_MODEL,
        "debounce_s": debounce,
        "changes": len(latencies),
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(_percentile(latencies, 95), 3),
        "max_s": round(max(latencies), 3),
        "mean_s": round(statistics.fmean(latencies), 3),
    }


# -- report ---------------------------------------------------------------------------------------


def _old_statistic(repeat: int) -> str:
    """What the figure of a result written before min/median/max was: the run at index n // 2
    of the runs sorted by speed, i.e. the better of two runs for the default two."""
    if repeat == 1:
        return "one run"
    if repeat == 2:
        return "best of 2 runs"
    return f"{'median' if repeat % 2 else 'upper median'} of {repeat} runs"  # sorted[n // 2]


def _throughput_markdown(result: dict[str, Any], t: dict[str, Any]) -> list[str]:
    head = (
        f"Throughput ({measured_line(result, t).strip('_')}): {t['chunks']} SciFact chunks "
        f"({t['docs']} docs), {t['model']} on {t['device']}, batch {t['batch_size']}, "
        f"{(t.get('machine') or result['machine'])['cpus']} CPU cores shared with other jobs"
    )
    if "statistic" not in t:
        # Written before min/median/max: its one figure per mode is not a median.
        stat = _old_statistic(t.get("repeat", 1))
        base = t["runs"][0]["chunks_per_second"]
        out = [
            f"{head}; each figure is the **{stat}**, interleaved (an older run, from before "
            "the benchmark reported min / median / max: rerun it for those).",
            "",
            f"| mode | torch threads | seconds | chunks/s ({stat}) | vs in-process "
            "| chunks per worker | all runs (chunks/s) |",
            "|---|---|---:|---:|---:|---|---|",
        ]
        for run in t["runs"]:
            split = " / ".join(str(n) for n in run.get("chunks_per_worker", [])) or "-"
            out.append(
                f"| {run['mode']} | {run['torch_threads']} | {run['seconds']} | "
                f"{run['chunks_per_second']} | {run['chunks_per_second'] / base:.2f}x | {split} | "
                f"{', '.join(str(x) for x in run.get('chunks_per_second_all', []))} |"
            )
        return [*out, ""]
    base = t["runs"][0]["chunks_per_second"]["median"]
    out = [
        f"{head}: {t['statistic']}.",
        "",
        "| mode | threads (OMP_NUM_THREADS, EMBEDPLAT_THREADS) | chunks/s min / **median** / max | seconds (median) "
        "| vs in-process (medians) | chunks per worker, each run |",
        "|---|---|---:|---:|---:|---|",
    ]
    for run in t["runs"]:
        cps = run["chunks_per_second"]
        splits = [r.get("chunks_per_worker") for r in run["runs"]]
        split = ", ".join(" / ".join(map(str, s)) for s in splits if s) or "-"
        out.append(
            f"| {run['mode']} | {run['torch_threads']} | "
            f"{cps['min']} / **{cps['median']}** / {cps['max']} | {run['seconds']['median']} | "
            f"{cps['median'] / base:.2f}x | {split} |"
        )
    return [*out, ""]


def markdown(result: dict[str, Any]) -> str:
    out: list[str] = []
    for key in ("throughput", "throughput_backend"):
        if t := result.get(key):
            out += _throughput_markdown(result, t)
    if lat := result.get("notify_latency"):
        # Written before parts were dated, the part was the bare list of runs.
        part = lat if isinstance(lat, dict) else {}
        runs = lat["runs"] if isinstance(lat, dict) else lat
        out += [
            f"NOTIFY path, change → searchable ({measured_line(result, part).strip('_')}; "
            "hash embedder, sweep disabled):",
            "",
            "| debounce | changes | p50 | p95 | max |",
            "|---:|---:|---:|---:|---:|",
            *[
                f"| {r['debounce_s']} s | {r['changes']} | {r['p50_s']} s | {r['p95_s']} s | "
                f"{r['max_s']} s |"
                for r in runs
            ],
            "",
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["throughput", "latency"])
    parser.add_argument("--chunks", type=int, default=600, help="backlog size (throughput)")
    parser.add_argument("--changes", type=int, default=100, help="changes timed (latency)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="the model's backend (throughput); a backend other than torch is written as the "
        "part throughput_backend, beside torch's",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="interleaved runs per mode, at least 3 (throughput)"
    )
    args = parser.parse_args()
    if args.repeat < 3:
        parser.error("--repeat must be at least 3: min / median / max need three runs")
    parts = ("throughput", "throughput_backend", "notify_latency")
    part = "throughput" if args.backend == "torch" else "throughput_backend"
    with server() as server_url:
        # Each part is written as soon as it is measured (the other kept, with its own date),
        # so a failure in the second loses nothing of the first.
        if args.only in (None, "throughput"):
            written = write_parts(
                "workers",
                {part: throughput(server_url, args.chunks, args.repeat, args.backend)},
                parts,
            )
        if args.only in (None, "latency"):
            runs = [notify_latency(server_url, args.changes, debounce) for debounce in (0.5, 0.1)]
            written = write_parts("workers", {"notify_latency": {"runs": runs}}, parts)
    print(markdown(json.loads(written.read_text())))
    print(f"\nwritten to {written}")


if __name__ == "__main__":
    main()
