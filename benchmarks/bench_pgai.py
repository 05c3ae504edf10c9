"""embedplat's attached tables side by side with pgai's vectorizer, on the same table and text.

Both systems keep the embeddings of one app table in step:
``articles(id int PRIMARY KEY, title text, body text, author text, views int)`` filled with
SciFact documents (title, abstract; 25 authors in turn). Each system gets its own database on
the same embedded PostgreSQL server and the same rows.

* embedplat: ``Platform.attach`` (title and body as text, author as metadata) and
  ``Platform.sync``, the bundled all-MiniLM-L6-v2 in this process.
* pgai (PyPI ``pgai``, pinned below): installed into ``benchmarks/.work/pgai-venv`` by this
  script (never into the project's environment), ``pgai.install`` into its database,
  ``ai.create_vectorizer`` on the table, and its worker (``pgai.vectorizer.Worker``, once mode)
  run from that venv in a subprocess. pgai embeds only through HTTP providers: its OpenAI
  embedder points at a small local endpoint served by this script that embeds with the very
  same embedplat embedder object (all-MiniLM-L6-v2, bundled files). The texts the endpoint
  embeds are pgai's "chunks embedded".

Measured, for each system:

* ``initial``: documents/s from attach / ``create_vectorizer`` until everything is embedded
  (one run each; the ANN index built afterwards, timed apart);
* ``edits``: one sentence of 50 documents' bodies edited, then sync / worker to completion:
  chunks embedded (rounds interleaved, other documents each round);
* ``non_text_update``: ``UPDATE articles SET views = views + 1`` on every row: queue rows or
  stale records it creates, chunks the next sync / worker embeds;
* ``noop``: a sync / worker run with nothing to do (in a warm process, and as a fresh CLI
  process: ``embedplat sync`` / ``pgai vectorizer worker --once``): seconds, chunks embedded;
* ``search``: filtered top-10 (``author = X``) for 50 SciFact queries embedded by the same
  model: p50 / p95 latency at the client, and how many of the exact top 10 each returns.

Chunking is matched as closely as the two chunkers allow: embedplat's 200-token chunks
(32-token overlap, the defaults) and pgai's recursive character splitter with chunk size and
overlap converted to characters at the corpus's own characters-per-token ratio.

    python -m benchmarks.bench_pgai [--quick] [--docs N]

The first run creates the pgai venv (a few minutes: pgai's worker extra pulls docling and
torch; torch is pinned to the CPU build so that pip does not fetch a CUDA one).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from embedplat.api import Platform
from embedplat.config import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL
from embedplat.db.connection import libpq_url, with_database
from embedplat.embedders import Embedder, TokenCounter, load_embedder

from .common import (
    HERE,
    WORK,
    fresh_database,
    latency_percentiles,
    require_data,
    server,
    settings,
    write_result,
)

PGAI_VERSION = "0.12.1"
PGAI_REQUIREMENT = f"pgai[vectorizer-worker]=={PGAI_VERSION}"
# The worker extra pulls docling, which pulls torch: the CPU build, not a multi-GB CUDA one.
PGAI_CONSTRAINTS = ("torch==2.13.0",)
PGAI_VENV = WORK / "pgai-venv"
PGAI_LOG = WORK / "pgai-worker.log"
# The name pgai's OpenAI embedder reads its API key from (the worker's environment); the
# endpoint refuses requests without the key this run made up.
KEY_VARIABLE = "EMBEDPLAT_BENCH_EMBED_KEY"
PGAI_INDEX = "articles_pgai_hnsw"  # the HNSW index this script builds on pgai's embeddings

MODEL = DEFAULT_MODEL
DIMENSIONS = 384
AUTHORS = 25
EDITS_PER_ROUND = 50
K = 10
MACHINE_NOTE = "measured on a shared 2-core machine (other work ran at the same time)"

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_VECTOR_LITERAL = re.compile(r"'\[[^']*\]'::vector")

APP_TABLE = """
CREATE TABLE articles (
    id integer PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    author text NOT NULL,
    views integer NOT NULL DEFAULT 0
)"""

# Runs in the pgai venv: one JSON command per stdin line, one JSON answer per line on the
# original stdout (the libraries' own output goes to stderr, which is the log file).
DRIVER = r"""
import asyncio, json, logging, os, sys, time
proto = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from importlib import metadata
import pgai
from pgai.vectorizer import Worker

def versions():
    names = ("pgai", "openai", "langchain-text-splitters", "psycopg", "pgvector")
    out = {n: metadata.version(n) for n in names}
    out["python"] = sys.version.split()[0]
    return out

for line in sys.stdin:
    cmd = json.loads(line)
    start = time.perf_counter()
    try:
        if cmd["op"] == "versions":
            out = versions()
        elif cmd["op"] == "install":
            pgai.install(cmd["url"])
            out = {}
        elif cmd["op"] == "work":
            error = asyncio.run(Worker(cmd["url"], once=True).run())
            out = {"error": None if error is None else f"{type(error).__name__}: {error}"}
        else:
            out = {"error": "unknown op"}
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["seconds"] = time.perf_counter() - start
    proto.write(json.dumps(out) + "\n")
"""


# -- corpus -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Article:
    id: int
    title: str
    body: str
    author: str


def _articles(n: int) -> list[Article]:
    """The first ``n`` SciFact documents that have an abstract, authors in turn."""
    out: list[Article] = []
    with require_data("scifact", "corpus.jsonl").open() as fh:
        for line in fh:
            doc = json.loads(line)
            if not (doc.get("text") or "").strip():
                continue
            i = len(out) + 1
            out.append(Article(i, doc["title"], doc["text"], f"author {i % AUTHORS}"))
            if len(out) >= n:
                break
    return out


def _queries(n: int) -> list[str]:
    with require_data("scifact", "queries.jsonl").open() as fh:
        return [json.loads(line)["text"] for line, _ in zip(fh, range(n), strict=False)]


def _edit_one_sentence(body: str, rng: random.Random) -> str:
    """``body`` with one of its sentences reworded (a few words put before it)."""
    starts = [0] + [m.end() for m in _SENTENCE.finditer(body)]
    at = rng.choice(starts)
    return body[:at] + "In a revised reading, " + body[at : at + 1].lower() + body[at + 1 :]


def _chars_per_token(articles: Sequence[Article], embedder: Embedder) -> float:
    bodies = [a.body for a in articles]
    tokens = sum(embedder.token_counter().count_tokens(bodies))
    return sum(len(b) for b in bodies) / tokens


# -- plumbing -----------------------------------------------------------------------------------


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_url(url), autocommit=True)


@contextmanager
def _plain_database(server_url: str) -> Iterator[str]:
    """A new database without embedplat's schema (pgai's own); dropped afterwards."""
    name = f"bench_pgai_{uuid.uuid4().hex[:8]}"
    base = libpq_url(server_url)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(base, name)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _load_articles(conn: psycopg.Connection[Any], articles: Sequence[Article]) -> None:
    conn.execute(APP_TABLE)
    with (
        conn.cursor() as cur,
        cur.copy("COPY articles (id, title, body, author) FROM STDIN") as copy,
    ):
        for a in articles:
            copy.write_row((a.id, a.title, a.body, a.author))
    conn.execute("VACUUM ANALYZE articles")


def _apply_edits(conn: psycopg.Connection[Any], edits: dict[int, str]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "UPDATE articles SET body = %s WHERE id = %s",
            [(body, key) for key, body in edits.items()],
        )


def _spread(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
        "all": [round(v, digits) for v in values],
    }


def _token_stats(counts: Sequence[int]) -> dict[str, Any]:
    return {
        "chunks": len(counts),
        "tokens_mean": round(float(np.mean(counts)), 1),
        "tokens_p50": int(np.percentile(counts, 50)),
        "tokens_max": int(max(counts)),
        "over_256_tokens": sum(1 for c in counts if c > 256),
    }


# -- the one embedder ---------------------------------------------------------------------------


class TimedEmbedder:
    """The embedder both systems use (an :class:`~embedplat.embedders.Embedder`), with a clock
    on its model calls: the two systems never run at the same time, so the difference of two
    readings is one run's time in the model."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seconds = 0.0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    @property
    def normalized(self) -> bool:
        return self.inner.normalized

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def token_counter(self) -> TokenCounter:
        return self.inner.token_counter()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        start = time.perf_counter()
        vectors = self.inner.embed(texts)
        with self._lock:
            self.seconds += time.perf_counter() - start
        return vectors


class _BenchPlatform(Platform):
    """embedplat's facade, its sync embedding with the shared :class:`TimedEmbedder`."""

    def __init__(self, url: str, embedder: TimedEmbedder) -> None:
        super().__init__(url, settings())
        self._timed = embedder

    def embedder(self, model: str) -> Embedder:
        if model != MODEL:
            raise ValueError(f"this benchmark embeds with {MODEL} only, not {model}")
        return self._timed


# -- the embedding endpoint ---------------------------------------------------------------------


@dataclass
class EndpointCounters:
    requests: int = 0
    texts: int = 0
    model_seconds: float = 0.0


class EmbeddingEndpoint:
    """OpenAI's ``POST /v1/embeddings`` on 127.0.0.1, answered by ``embedder``; counts the
    texts it embeds. Requests must carry ``Authorization: Bearer <key>``."""

    def __init__(self, embedder: Embedder, key: str) -> None:
        self.embedder = embedder
        self.key = key
        self.counters = EndpointCounters()
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # no access log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> EmbeddingEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def snapshot(self) -> EndpointCounters:
        with self._lock:
            c = self.counters
            return EndpointCounters(c.requests, c.texts, c.model_seconds)

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        if request.path.rstrip("/") != "/v1/embeddings":
            return self._reply(request, 404, {"error": {"message": "not found"}})
        if not secrets.compare_digest(
            request.headers.get("Authorization", ""), f"Bearer {self.key}"
        ):
            return self._reply(request, 401, {"error": {"message": "bad API key"}})
        try:
            body = json.loads(request.rfile.read(int(request.headers.get("Content-Length", 0))))
            texts = body["input"]
            texts = [texts] if isinstance(texts, str) else texts
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ValueError("input must be a string or a list of strings")
            if body.get("encoding_format", "float") != "float":
                raise ValueError("only encoding_format float is served")
        except (ValueError, KeyError, TypeError) as exc:
            return self._reply(request, 400, {"error": {"message": str(exc)}})
        with self._lock:  # one model call at a time, as embedplat's own sync makes them
            start = time.perf_counter()
            vectors = self.embedder.embed(texts)
            self.counters.model_seconds += time.perf_counter() - start
            self.counters.requests += 1
            self.counters.texts += len(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": 0, "total_tokens": 0}  # not counted: pgai only logs it
        self._reply(
            request, 200, {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(raw)))
        request.end_headers()
        request.wfile.write(raw)


# -- the pgai venv and worker -------------------------------------------------------------------


def _venv_python() -> Path:
    return PGAI_VENV / "bin" / "python"


def ensure_pgai_venv() -> Path:
    """The pgai venv's python, with ``PGAI_REQUIREMENT`` installed (created if missing)."""
    python = _venv_python()
    check = [str(python), "-c", "import pgai.vectorizer, pgai; print(pgai.__version__)"]
    if python.exists():
        done = subprocess.run(check, capture_output=True, text=True, env=_pgai_env())
        if done.returncode == 0 and done.stdout.strip() == PGAI_VERSION:
            return python
    print(f"creating {PGAI_VENV.relative_to(HERE.parent)} with {PGAI_REQUIREMENT} ...")
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PGAI_VENV)], check=True)
    constraints = WORK / "pgai-constraints.txt"
    constraints.write_text("\n".join(PGAI_CONSTRAINTS) + "\n")
    log = WORK / "pgai-venv-install.log"
    with log.open("w") as out:
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "-c", str(constraints), PGAI_REQUIREMENT],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_pgai_env(),
        )
    if installed.returncode != 0:
        raise SystemExit(f"pip could not install {PGAI_REQUIREMENT}; see {log}")
    done = subprocess.run(check, capture_output=True, text=True, env=_pgai_env())
    if done.returncode != 0 or done.stdout.strip() != PGAI_VERSION:
        raise SystemExit(f"pgai does not import in {PGAI_VENV}: {done.stderr[-2000:]}")
    return python


def _pgai_env(key: str | None = None) -> dict[str, str]:
    """The environment of pgai's processes: this one's, without this venv, plus the key."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        [str(PGAI_VENV / "bin")]
        + [
            p
            for p in env.get("PATH", "").split(os.pathsep)
            if p and p != str(Path(sys.prefix) / "bin")
        ]
    )
    env["HF_HUB_OFFLINE"] = "1"
    env["DD_TRACE_ENABLED"] = "false"
    if key is not None:
        env[KEY_VARIABLE] = key
    return env


class PgaiDriver:
    """pgai in its own venv, in one long-lived subprocess (imports paid once): ``install``
    its catalog, ``work`` = one worker run in once mode (everything queued, then exit)."""

    def __init__(self, python: Path, key: str) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        script = WORK / "pgai_driver.py"
        script.write_text(DRIVER)
        self._log = PGAI_LOG.open("w")
        self._proc = subprocess.Popen(
            [str(python), "-u", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=_pgai_env(key),
        )

    def call(self, op: str, url: str | None = None) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"op": op, "url": url}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the pgai driver exited; its log: {_tail(PGAI_LOG)}")
        answer: dict[str, Any] = json.loads(line)
        if answer.get("error"):
            raise RuntimeError(f"pgai {op} failed: {answer['error']}; log: {_tail(PGAI_LOG)}")
        return answer

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


# -- the two systems ----------------------------------------------------------------------------


@dataclass
class Run:
    """One sync / worker run: its wall time and the chunks it embedded."""

    seconds: float
    chunks_embedded: int
    detail: dict[str, Any] = field(default_factory=dict)


class EmbedplatSide:
    name = "embedplat"

    def __init__(self, db: str, embedder: TimedEmbedder) -> None:
        self.db = db
        self.embedder = embedder
        self.platform = _BenchPlatform(db, embedder)
        self.conn = _connect(db)
        register_vector(self.conn)

    def close(self) -> None:
        self.platform.close()
        self.conn.close()

    def start(self) -> dict[str, Any]:
        """Attach the table (back-fill included), sync everything, then build the index."""
        start = time.perf_counter()
        self.platform.attach(
            "articles",
            "public.articles",
            text_columns=["title", "body"],
            metadata_columns=["author"],
            model=MODEL,
            chunk_tokens=DEFAULT_CHUNK_TOKENS,
            chunk_overlap=DEFAULT_CHUNK_OVERLAP,
        )
        attach_seconds = time.perf_counter() - start
        run = self.work()
        total = time.perf_counter() - start
        start = time.perf_counter()
        index = self.platform.sync("articles")  # builds the missing HNSW index, embeds nothing
        index_seconds = time.perf_counter() - start
        return {
            "setup_seconds": round(attach_seconds, 3),
            "setup_step": "Platform.attach (creates the collection and triggers, back-fills records)",
            "work_seconds": round(run.seconds, 3),
            "seconds": round(total, 3),
            "chunks_embedded": run.chunks_embedded,
            "index_seconds": round(index_seconds, 3),
            "index_chunks_embedded": index.chunks_embedded,
            "indexes_built": index.indexes_built,
            "run": run.detail,
        }

    def work(self) -> Run:
        model_before = self.embedder.seconds
        start = time.perf_counter()
        report = self.platform.sync(
            "articles", options=self.platform.sync_options(build_index=False)
        )
        seconds = time.perf_counter() - start
        if report.failures or report.chunks_failed or report.records_failed:
            raise RuntimeError(f"embedplat sync failed: {report.to_json()}")
        return Run(
            seconds,
            report.chunks_embedded,
            {
                "records_chunked": report.records_chunked,
                "model_seconds": round(self.embedder.seconds - model_before, 3),
            },
        )

    def pending(self) -> dict[str, int]:
        row = self.conn.execute(
            "SELECT (SELECT count(*) FROM embedplat.stale_records s"
            "        JOIN embedplat.collections c ON c.id = s.collection_id"
            "        WHERE c.name = 'articles'),"
            " (SELECT count(*) FROM embedplat.embedding_queue)"
        ).fetchone()
        assert row is not None
        return {"stale_records": int(row[0]), "queue_rows": int(row[1])}

    def chunks_of(self, ids: Sequence[int]) -> int:
        """Chunks the records of these table rows have now."""
        row = self.conn.execute(
            "SELECT count(*) FROM embedplat.chunks ch"
            " JOIN embedplat.records r ON r.id = ch.record_id"
            " JOIN embedplat.collections c ON c.id = r.collection_id"
            " WHERE c.name = 'articles' AND r.external_id = ANY (%s)",
            ([str(i) for i in ids],),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def chunk_tokens(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT ch.token_count FROM embedplat.chunks ch"
            " JOIN embedplat.collections c ON c.id = ch.collection_id WHERE c.name = 'articles'"
        ).fetchall()
        return [int(r[0]) for r in rows]

    def search(self, vector: np.ndarray, author: str, per_record: bool) -> list[tuple[str, int]]:
        rows = self.conn.execute(
            "SELECT id, chunk_ordinal FROM embedplat.search("
            "'articles', %s, %s, jsonb_build_object('author', %s::text), per_record => %s)",
            (vector, K, author, per_record),
        ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def exact(self, vector: np.ndarray, author: str, per_record: bool) -> list[tuple[str, int]]:
        """The true top k by a full scan ("+ 0" matches no index)."""
        if per_record:
            query = (
                "SELECT external_id, min(d) AS d FROM ("
                " SELECT r.external_id, (e.embedding::vector(384) <=> %s) + 0 AS d"
                " FROM embedplat.embeddings e JOIN embedplat.records r ON r.id = e.record_id"
                " JOIN embedplat.collections c ON c.id = r.collection_id"
                " WHERE c.name = 'articles' AND r.metadata ->> 'author' = %s) x"
                " GROUP BY external_id ORDER BY d LIMIT %s"
            )
            rows = self.conn.execute(query, (vector, author, K)).fetchall()
            return [(str(r[0]), 0) for r in rows]
        rows = self.conn.execute(
            "SELECT r.external_id, ch.ordinal FROM embedplat.embeddings e"
            " JOIN embedplat.chunks ch ON ch.id = e.chunk_id"
            " JOIN embedplat.records r ON r.id = e.record_id"
            " JOIN embedplat.collections c ON c.id = r.collection_id"
            " WHERE c.name = 'articles' AND r.metadata ->> 'author' = %s"
            " ORDER BY (e.embedding::vector(384) <=> %s) + 0 LIMIT %s",
            (author, vector, K),
        ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def noop_cli(self) -> Run:
        env = {**os.environ, "EMBEDPLAT_DATABASE_URL": self.db, "HF_HUB_OFFLINE": "1"}
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "embedplat.cli", "sync", "articles", "--no-index", "--json"],
            capture_output=True,
            text=True,
            env=env,
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"embedplat sync failed: {done.stderr[-2000:]}")
        report = json.loads(done.stdout)
        return Run(seconds, int(report["chunks_embedded"]))


class PgaiSide:
    name = "pgai"

    def __init__(
        self,
        db: str,
        driver: PgaiDriver,
        endpoint: EmbeddingEndpoint,
        python: Path,
        key: str,
        chunk_chars: int,
        overlap_chars: int,
    ) -> None:
        self.db = db
        self.driver = driver
        self.endpoint = endpoint
        self.python = python
        self.key = key
        self.chunk_chars = chunk_chars
        self.overlap_chars = overlap_chars
        self.conn = _connect(db)
        self.vectorizer_id = 0
        self.view = sql.Identifier("articles_embedding")
        self.store = sql.Identifier("articles_embedding_store")
        self.queue = sql.Identifier("ai", "_vectorizer_q_1")

    def close(self) -> None:
        self.conn.close()

    def install(self) -> float:
        seconds = float(self.driver.call("install", libpq_url(self.db))["seconds"])
        register_vector(self.conn)  # the vector type exists now (pgai.install creates it)
        return seconds

    def start(self) -> dict[str, Any]:
        """Create the vectorizer (queues every row), run the worker until the queue is
        empty, then build an HNSW index on the embeddings (pgai builds one itself only with
        TimescaleDB scheduling)."""
        start = time.perf_counter()
        row = self.conn.execute(
            "SELECT ai.create_vectorizer('public.articles'::regclass,"
            " name => 'articles_pgai',"
            " loading => ai.loading_column('body'),"
            " embedding => ai.embedding_openai(%s, %s, api_key_name => %s, base_url => %s),"
            " chunking => ai.chunking_recursive_character_text_splitter(%s, %s),"
            " formatting => ai.formatting_python_template(%s),"
            " destination => ai.destination_table(),"
            " indexing => ai.indexing_none(),"
            " scheduling => ai.scheduling_none())",
            (
                MODEL,
                DIMENSIONS,
                KEY_VARIABLE,
                self.endpoint.base_url,
                self.chunk_chars,
                self.overlap_chars,
                "$title\n\n$chunk",
            ),
        ).fetchone()
        assert row is not None
        self.vectorizer_id = int(row[0])
        names = self.conn.execute(
            "SELECT queue_schema, queue_table, config -> 'destination' ->> 'target_schema',"
            " config -> 'destination' ->> 'target_table', config -> 'destination' ->> 'view_schema',"
            " config -> 'destination' ->> 'view_name' FROM ai.vectorizer WHERE id = %s",
            (self.vectorizer_id,),
        ).fetchone()
        assert names is not None
        self.queue = sql.Identifier(names[0], names[1])
        self.store = sql.Identifier(names[2], names[3])
        self.view = sql.Identifier(names[4], names[5])
        setup_seconds = time.perf_counter() - start
        queued = self.pending()["queue_rows"]
        run = self.work()
        total = time.perf_counter() - start
        start = time.perf_counter()
        self.conn.execute(
            sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops)").format(
                sql.Identifier(PGAI_INDEX), self.store
            )
        )
        index_seconds = time.perf_counter() - start
        self.conn.execute(sql.SQL("ANALYZE {}").format(self.store))
        return {
            "setup_seconds": round(setup_seconds, 3),
            "setup_step": "ai.create_vectorizer (queue, trigger, destination table and view; "
            "enqueues every row)",
            "queued_by_setup": queued,
            "work_seconds": round(run.seconds, 3),
            "seconds": round(total, 3),
            "chunks_embedded": run.chunks_embedded,
            "index_seconds": round(index_seconds, 3),
            "index_statement": f"CREATE INDEX {PGAI_INDEX} ON <destination table> USING hnsw "
            "(embedding vector_cosine_ops)",
            "run": run.detail,
        }

    def work(self) -> Run:
        before = self.endpoint.snapshot()
        start = time.perf_counter()
        self.driver.call("work", libpq_url(self.db))
        seconds = time.perf_counter() - start
        after = self.endpoint.snapshot()
        left = self.pending()["queue_rows"]
        if left:
            raise RuntimeError(f"the pgai worker left {left} queue rows")
        return Run(
            seconds,
            after.texts - before.texts,
            {
                "http_requests": after.requests - before.requests,
                "model_seconds": round(after.model_seconds - before.model_seconds, 3),
            },
        )

    def pending(self) -> dict[str, int]:
        row = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.queue)).fetchone()
        assert row is not None
        return {"queue_rows": int(row[0])}

    def chunks_of(self, ids: Sequence[int]) -> int:
        """Embedded chunks these table rows have now."""
        row = self.conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE id = ANY (%s)").format(self.store),
            (list(ids),),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def embedded_texts(self) -> list[str]:
        """The texts pgai embedded for the current rows: its template applied to each chunk."""
        rows = self.conn.execute(
            sql.SQL("SELECT title, chunk FROM {}").format(self.view)
        ).fetchall()
        return [f"{r[0]}\n\n{r[1]}" for r in rows]

    def search(self, vector: np.ndarray, author: str, iterative: bool) -> list[tuple[str, int]]:
        # The query as pgai's documentation writes it: the view, ORDER BY distance LIMIT k.
        query = sql.SQL(
            "SELECT id, chunk_seq, embedding <=> %s AS distance FROM {} WHERE author = %s"
            " ORDER BY distance LIMIT %s"
        ).format(self.view)
        if not iterative:
            rows = self.conn.execute(query, (vector, author, K)).fetchall()
        else:
            with self.conn.transaction():
                self.conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                rows = self.conn.execute(query, (vector, author, K)).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def exact(self, vector: np.ndarray, author: str) -> list[tuple[str, int]]:
        rows = self.conn.execute(
            sql.SQL(
                "SELECT id, chunk_seq FROM {} WHERE author = %s"
                " ORDER BY (embedding <=> %s) + 0 LIMIT %s"
            ).format(self.view),
            (author, vector, K),
        ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def plan(self, vector: np.ndarray, author: str, iterative: bool) -> str:
        query = sql.SQL(
            "EXPLAIN (COSTS OFF) SELECT id, chunk_seq, embedding <=> %s AS distance FROM {}"
            " WHERE author = %s ORDER BY distance LIMIT %s"
        ).format(self.view)
        with self.conn.transaction():
            if iterative:
                self.conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            rows = self.conn.execute(query, (vector, author, K)).fetchall()
        # The query vector is written out in full in the plan: shown as $1.
        return "\n".join(_VECTOR_LITERAL.sub("$1", str(r[0])) for r in rows)

    def noop_cli(self) -> Run:
        before = self.endpoint.snapshot()
        start = time.perf_counter()
        command = [str(self.python.parent / "pgai"), "vectorizer", "worker", "--once"]
        done = subprocess.run(
            [*command, "--log-level", "WARN", "-d", libpq_url(self.db)],
            capture_output=True,
            text=True,
            env=_pgai_env(self.key),
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"pgai vectorizer worker failed: {done.stderr[-2000:]}")
        return Run(seconds, self.endpoint.snapshot().texts - before.texts)


# -- measurements -------------------------------------------------------------------------------


def _interleaved(rounds: int, *sides: Any) -> Iterator[tuple[int, Any]]:
    """(round, side) with the order of the sides alternating from round to round."""
    for r in range(rounds):
        for side in sides if r % 2 == 0 else tuple(reversed(sides)):
            yield r, side


def edits_part(
    e: EmbedplatSide,
    p: PgaiSide,
    articles: Sequence[Article],
    rounds: int,
    rng: random.Random,
) -> dict[str, Any]:
    chosen = rng.sample(list(articles), EDITS_PER_ROUND * rounds)
    plans = [
        {
            a.id: _edit_one_sentence(a.body, rng)
            for a in chosen[r * EDITS_PER_ROUND : (r + 1) * EDITS_PER_ROUND]
        }
        for r in range(rounds)
    ]
    out: dict[str, list[dict[str, Any]]] = {"embedplat": [], "pgai": []}
    for r, side in _interleaved(rounds, e, p):
        _apply_edits(side.conn, plans[r])
        pending = side.pending()
        run = side.work()
        out[side.name].append(
            {
                "round": r + 1,
                "pending_after_edits": pending,
                "seconds": round(run.seconds, 3),
                "chunks_embedded": run.chunks_embedded,
                "chunks_of_edited_documents": side.chunks_of(list(plans[r])),
                **run.detail,
            }
        )
        print(f"edits round {r + 1} {side.name}: {out[side.name][-1]}")
    return {
        "edited_documents_per_round": EDITS_PER_ROUND,
        "edit": "one sentence of the body reworded ('In a revised reading, ' + the sentence)",
        **{
            name: {
                "chunks_embedded": _spread([float(x["chunks_embedded"]) for x in runs], 0),
                "seconds": _spread([x["seconds"] for x in runs]),
                "chunks_per_edit_computed": round(
                    statistics.median(x["chunks_embedded"] for x in runs) / EDITS_PER_ROUND, 2
                ),
                "share_of_edited_documents_chunks_computed": round(
                    sum(x["chunks_embedded"] for x in runs)
                    / sum(x["chunks_of_edited_documents"] for x in runs),
                    3,
                ),
                "rounds": runs,
            }
            for name, runs in out.items()
        },
    }


def non_text_update_part(e: EmbedplatSide, p: PgaiSide, rounds: int) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {"embedplat": [], "pgai": []}
    for r, side in _interleaved(rounds, e, p):
        start = time.perf_counter()
        side.conn.execute("UPDATE articles SET views = views + 1")
        update_seconds = time.perf_counter() - start
        pending = side.pending()
        run = side.work()
        out[side.name].append(
            {
                "round": r + 1,
                "update_seconds": round(update_seconds, 3),
                "pending_after_update": pending,
                "work_seconds": round(run.seconds, 3),
                "chunks_embedded": run.chunks_embedded,
                **run.detail,
            }
        )
        print(f"views update round {r + 1} {side.name}: {out[side.name][-1]}")
    return {
        "statement": "UPDATE articles SET views = views + 1 (every row)",
        **{
            name: {
                "chunks_embedded": _spread([float(x["chunks_embedded"]) for x in runs], 0),
                "work_seconds": _spread([x["work_seconds"] for x in runs]),
                "update_seconds": _spread([x["update_seconds"] for x in runs]),
                "rounds": runs,
            }
            for name, runs in out.items()
        },
    }


def noop_part(e: EmbedplatSide, p: PgaiSide, rounds: int, cli_rounds: int) -> dict[str, Any]:
    warm: dict[str, list[Run]] = {"embedplat": [], "pgai": []}
    for _, side in _interleaved(rounds, e, p):
        warm[side.name].append(side.work())
    cli: dict[str, list[Run]] = {"embedplat": [], "pgai": []}
    for _, side in _interleaved(cli_rounds, e, p):
        cli[side.name].append(side.noop_cli())
    print("noop warm seconds:", {k: [round(r.seconds, 4) for r in v] for k, v in warm.items()})
    return {
        "warm_note": "a sync / worker run in a process that is already running (embedplat: "
        "Platform.sync in this process; pgai: Worker(once=True).run() in the driver process)",
        "cli_note": "a fresh process each run: `embedplat sync articles --no-index --json` / "
        "`pgai vectorizer worker --once` (interpreter start and imports included)",
        **{
            name: {
                "warm_seconds": _spread([r.seconds for r in warm[name]], 4),
                "warm_chunks_embedded": [r.chunks_embedded for r in warm[name]],
                "cli_seconds": _spread([r.seconds for r in cli[name]]),
                "cli_chunks_embedded": [r.chunks_embedded for r in cli[name]],
            }
            for name in warm
        },
    }


def search_part(
    e: EmbedplatSide,
    p: PgaiSide,
    embedder: Embedder,
    articles: Sequence[Article],
    n_queries: int,
    passes: int,
) -> dict[str, Any]:
    queries = _queries(n_queries)
    vectors = embedder.embed(queries)
    authors = [f"author {i % AUTHORS}" for i in range(len(queries))]
    variants: dict[str, Callable[[np.ndarray, str], list[tuple[str, int]]]] = {
        "embedplat_per_record": lambda v, a: e.search(v, a, per_record=True),
        "embedplat_chunks": lambda v, a: e.search(v, a, per_record=False),
        "pgai_view": lambda v, a: p.search(v, a, iterative=False),
        "pgai_view_iterative_scan": lambda v, a: p.search(v, a, iterative=True),
    }
    exact: dict[str, Callable[[np.ndarray, str], list[tuple[str, int]]]] = {
        "embedplat_per_record": lambda v, a: e.exact(v, a, per_record=True),
        "embedplat_chunks": lambda v, a: e.exact(v, a, per_record=False),
        "pgai_view": p.exact,
        "pgai_view_iterative_scan": p.exact,
    }
    latencies: dict[str, list[float]] = {name: [] for name in variants}
    returned: dict[str, list[int]] = {name: [] for name in variants}
    short: dict[str, int] = {name: 0 for name in variants}  # fewer rows than the exact scan
    recall: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for v, a in zip(vectors, authors, strict=True):  # warm-up, and the quality figures
        for name in names:
            hits = variants[name](v, a)
            truth = exact[name](v, a)
            if name == "embedplat_per_record":  # records: the chunk does not matter
                hits = [(h[0], 0) for h in hits]
            returned[name].append(len(hits))
            short[name] += len(hits) < len(truth)
            recall[name].append(len(set(hits) & set(truth)) / len(truth))
    for run in range(passes):
        order = names if run % 2 == 0 else list(reversed(names))
        for v, a in zip(vectors, authors, strict=True):
            for name in order:
                start = time.perf_counter()
                variants[name](v, a)
                latencies[name].append(time.perf_counter() - start)
    return {
        "queries": len(queries),
        "passes": passes,
        "k": K,
        "filter": f"author = X, X one of {AUTHORS} authors in turn",
        "docs_per_author": sum(1 for a in articles if a.author == authors[0]),
        "note": "client-side round trip (psycopg, same host) of one SQL statement with a "
        "precomputed query vector; passes interleaved, the order of the variants alternating",
        "variants": {
            "embedplat_per_record": "embedplat.search('articles', q, 10, "
            "'{\"author\": X}') (the default: the 10 best records)",
            "embedplat_chunks": "the same with per_record => false (the 10 best chunks, "
            "as pgai's query)",
            "pgai_view": "SELECT ... FROM articles_embedding WHERE author = X ORDER BY "
            "embedding <=> q LIMIT 10 (default settings)",
            "pgai_view_iterative_scan": "the same with SET LOCAL hnsw.iterative_scan = "
            "relaxed_order",
        },
        "pgai_plans": {
            "default": p.plan(vectors[0], authors[0], iterative=False),
            "iterative_scan": p.plan(vectors[0], authors[0], iterative=True),
        },
        **{
            name: {
                **latency_percentiles(latencies[name]),
                "rows_returned_min": min(returned[name]),
                "queries_short_of_k": sum(1 for n in returned[name] if n < K),
                "queries_with_fewer_rows_than_exact": short[name],
                "recall_at_10_vs_exact_mean": round(float(np.mean(recall[name])), 3),
            }
            for name in names
        },
    }


# -- main ---------------------------------------------------------------------------------------


def _commit() -> str | None:
    """The checkout's commit (``-dirty`` when tracked files differ), None outside git."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            cwd=HERE.parent,
        )
    except OSError:
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def run_benchmark(
    server_url: str, n_docs: int, edit_rounds: int, update_rounds: int, quick: bool
) -> dict[str, Any]:
    articles = _articles(n_docs)
    embedder = TimedEmbedder(
        load_embedder(MODEL, device=settings().device, batch_size=settings().batch_size)
    )
    embedder.embed(["warm up the model"] * 8)
    ratio = _chars_per_token(articles, embedder)
    chunk_chars = round(DEFAULT_CHUNK_TOKENS * ratio)
    overlap_chars = round(DEFAULT_CHUNK_OVERLAP * ratio)
    python = ensure_pgai_venv()
    key = secrets.token_urlsafe(24)
    rng = random.Random(11)
    driver = PgaiDriver(python, key)
    try:
        pgai_versions = driver.call("versions")
        pgai_versions.pop("seconds", None)
        pgai_versions.pop("error", None)
        with (
            EmbeddingEndpoint(embedder, key) as endpoint,
            fresh_database(server_url) as e_db,
            _plain_database(server_url) as p_db,
        ):
            with _connect(e_db) as conn:
                _load_articles(conn, articles)
            with _connect(p_db) as conn:
                _load_articles(conn, articles)
            e = EmbedplatSide(e_db, embedder)
            p = PgaiSide(p_db, driver, endpoint, python, key, chunk_chars, overlap_chars)
            try:
                install_seconds = p.install()
                # One run each (the initial embedding is the costly part); embedplat first.
                initial: dict[str, Any] = {}
                for side in (e, p):
                    load_before = os.getloadavg()[0]
                    initial[side.name] = side.start()
                    initial[side.name]["load_average_1m_before_after"] = [
                        round(load_before, 2),
                        round(os.getloadavg()[0], 2),
                    ]
                for name in ("embedplat", "pgai"):
                    part = initial[name]
                    part["docs_per_second_computed"] = round(n_docs / part["seconds"], 1)
                    part["chunks_per_second_computed"] = round(
                        part["chunks_embedded"] / part["seconds"], 1
                    )
                    part["chunks_per_document_computed"] = round(
                        part["chunks_embedded"] / n_docs, 2
                    )
                initial["pgai"]["pgai_install_seconds"] = round(install_seconds, 3)
                print("initial:", json.dumps(initial))
                chunking = {
                    "chars_per_token_of_the_bodies": round(ratio, 3),
                    "embedplat": {
                        "chunker": "embedplat.chunking (model tokens, sentence-aware)",
                        "chunk_tokens": DEFAULT_CHUNK_TOKENS,
                        "chunk_overlap_tokens": DEFAULT_CHUNK_OVERLAP,
                        "text": "title and body joined (attach text_columns title, body); "
                        "chunked as one text",
                        **_token_stats(e.chunk_tokens()),
                    },
                    "pgai": {
                        "chunker": "ai.chunking_recursive_character_text_splitter "
                        "(langchain RecursiveCharacterTextSplitter, default separators)",
                        "chunk_size_chars": chunk_chars,
                        "chunk_overlap_chars": overlap_chars,
                        "text": "body chunked (ai.loading_column('body')); each chunk "
                        "embedded as '$title\\n\\n$chunk' (ai.formatting_python_template)",
                        **_token_stats(embedder.token_counter().count_tokens(p.embedded_texts())),
                    },
                    "model_max_seq_length_tokens": 256,
                }
                edits = edits_part(e, p, articles, edit_rounds, rng)
                update = non_text_update_part(e, p, update_rounds)
                noop = noop_part(e, p, rounds=6, cli_rounds=3)
                search = search_part(
                    e, p, embedder, articles, n_queries=50, passes=3 if quick else 5
                )
            finally:
                e.close()
                p.close()
    finally:
        driver.close()
    return {
        "note": MACHINE_NOTE,
        "quick": quick,
        "docs": n_docs,
        "corpus": "SciFact corpus.jsonl, the first documents with an abstract; "
        f"author = 'author ' || (id % {AUTHORS})",
        "model": f"{MODEL} (bundled files, sentence-transformers, CPU), one embedder object "
        "for both: embedplat calls it in process, pgai through the local endpoint",
        "versions": {
            "embedplat": metadata.version("embedplat"),
            "embedplat_commit": _commit(),
            "sentence_transformers": metadata.version("sentence-transformers"),
            "torch": metadata.version("torch"),
            "pgai_venv": pgai_versions,
            "pgai_requirement": PGAI_REQUIREMENT,
            "pgai_constraints": list(PGAI_CONSTRAINTS),
        },
        "settings": {
            "embedplat_sync_batch_size": settings().batch_size,
            "pgai_processing": "ai.processing_default() (50 rows per batch, concurrency 1)",
            "pgai_embedding": "ai.embedding_openai(model, 384, base_url => local endpoint); "
            "scheduling_none, indexing_none (automatic indexing needs TimescaleDB scheduling)",
        },
        "chunking": chunking,
        "initial": initial,
        "edits": edits,
        "non_text_update": update,
        "noop": noop,
        "search": search,
    }


def _mmm(spread: dict[str, Any], unit: str = "") -> str:
    return f"{spread['min']:g} / {spread['median']:g} / {spread['max']:g}{unit}"


def _created_work(rounds: list[dict[str, Any]]) -> str:
    """The work an UPDATE left (queue rows, stale records), the most of any round."""
    keys = rounds[0]["pending_after_update"]
    most = {k: max(r["pending_after_update"][k] for r in rounds) for k in keys}
    return ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in most.items())


def comparison_rows(result: dict[str, Any]) -> list[str]:
    """The side-by-side table (README and RESULTS.md): one row per measure."""
    i, ed, up, no = (result[k] for k in ("initial", "edits", "non_text_update", "noop"))
    s = result["search"]
    n = result["docs"]

    def pair(f: Callable[[str], str]) -> str:
        return f"{f('embedplat')} | {f('pgai')}"

    return [
        f"| {n:,} SciFact documents, same table | embedplat | pgai {result['versions']['pgai_venv']['pgai']} |",
        "|---|---:|---:|",
        "| initial: documents/s, attach / `create_vectorizer` until all embedded (one run) | "
        + pair(lambda k: f"**{i[k]['docs_per_second_computed']}**")
        + " |",
        "| chunks embedded initially (per document) | "
        + pair(lambda k: f"{i[k]['chunks_embedded']:,} ({i[k]['chunks_per_document_computed']})")
        + " |",
        f"| 50 one-sentence edits: chunks re-embedded (median of {len(ed['embedplat']['rounds'])} rounds) | "
        + pair(
            lambda k: (
                f"**{ed[k]['chunks_embedded']['median']:g}** "
                f"({100 * ed[k]['share_of_edited_documents_chunks_computed']:.0f}% of those documents' chunks)"
            )
        )
        + " |",
        f"| `UPDATE ... SET views = views + 1` on all {n:,} rows: work created | "
        + pair(lambda k: _created_work(up[k]["rounds"]))
        + " |",
        "| … chunks the next sync / worker run embeds (median) | "
        + pair(
            lambda k: (
                f"**{up[k]['chunks_embedded']['median']:,g}** "
                f"({up[k]['work_seconds']['median']:g} s)"
            )
        )
        + " |",
        "| no-op run, warm process: seconds (median), chunks embedded | "
        + pair(
            lambda k: f"{no[k]['warm_seconds']['median']:g} s, {max(no[k]['warm_chunks_embedded'])}"
        )
        + " |",
        "| no-op run, fresh CLI process (`embedplat sync` / `pgai vectorizer worker --once`) | "
        + pair(lambda k: f"{no[k]['cli_seconds']['median']:g} s")
        + " |",
        "| filtered top-10 search (`author = X`), p50 / p95 at the client | "
        + f"{s['embedplat_per_record']['p50_ms']} / {s['embedplat_per_record']['p95_ms']} ms"
        + f" | {s['pgai_view']['p50_ms']} / {s['pgai_view']['p95_ms']} ms |",
    ]


def _plans_note(plans: dict[str, str]) -> str:
    def steps(plan: str) -> str:
        return " → ".join(
            line.strip().removeprefix("->").strip()
            for line in plan.splitlines()
            if not line.strip().startswith(("Filter", "Recheck", "Index Cond", "Sort Key"))
        )

    default, iterative = plans["default"], plans["iterative_scan"]
    if default == iterative:
        text = f"pgai's query plan (the same with the iterative scan on): {steps(default)}."
    else:
        text = (
            f"pgai's query plan: {steps(default)}; with the iterative scan on: {steps(iterative)}."
        )
    if PGAI_INDEX not in default + iterative:
        text += (
            " The planner filters the source table first and sorts the matching chunks: the "
            "HNSW index is not used at this size, so each query is an exact scan of one "
            "author's chunks."
        )
    return text


def markdown(result: dict[str, Any]) -> str:
    """The body of RESULTS.md's section (heading, reproduce line and date come from run.py)."""
    i, ed, up, no, s, ch = (
        result[k] for k in ("initial", "edits", "non_text_update", "noop", "search", "chunking")
    )
    e_ch, p_ch = ch["embedplat"], ch["pgai"]
    variants = ("embedplat_per_record", "embedplat_chunks", "pgai_view", "pgai_view_iterative_scan")

    def pair(f: Callable[[str], str]) -> str:
        return f"{f('embedplat')} | {f('pgai')}"

    out = [
        f"{result['note'].capitalize()}. {result['docs']:,} SciFact documents (title, abstract; "
        f"{s['docs_per_author']} per author) in `articles(id, title, body, "
        "author, views)`, one database per system on the same server. embedplat: "
        "`Platform.attach` (title + body as text, author as metadata), `Platform.sync`. pgai "
        f"`{result['versions']['pgai_requirement']}` in its own venv: `pgai.install`, "
        "`ai.create_vectorizer` (OpenAI embedder pointed at a local endpoint), its worker in "
        "once mode. One all-MiniLM-L6-v2 object embeds for both: in process for embedplat, "
        "behind the endpoint (OpenAI `POST /v1/embeddings`) for pgai, which counts the texts "
        "it embeds. Rounds interleaved, the order alternating; min / median / max where "
        "repeated.",
        "",
        *comparison_rows(result),
        "",
        "Chunking, as close as the two chunkers allow (pgai's sizes are embedplat's token "
        f"counts times the corpus's {ch['chars_per_token_of_the_bodies']} characters per token):",
        "",
        "| | chunker | size / overlap | chunks | tokens mean / p50 / max | over the model's 256 (truncated) |",
        "|---|---|---|---:|---:|---:|",
        f"| embedplat | {e_ch['chunker']}; {e_ch['text']} | {e_ch['chunk_tokens']} / "
        f"{e_ch['chunk_overlap_tokens']} tokens | {e_ch['chunks']:,} | {e_ch['tokens_mean']} / "
        f"{e_ch['tokens_p50']} / {e_ch['tokens_max']} | {e_ch['over_256_tokens']} |",
        f"| pgai | {p_ch['chunker']}; {p_ch['text']} | {p_ch['chunk_size_chars']} / "
        f"{p_ch['chunk_overlap_chars']} characters | {p_ch['chunks']:,} | {p_ch['tokens_mean']} / "
        f"{p_ch['tokens_p50']} / {p_ch['tokens_max']} | {p_ch['over_256_tokens']} |",
        "",
        "Times (seconds, min / median / max):",
        "",
        "| | embedplat | pgai |",
        "|---|---:|---:|",
        f"| initial: setup step (attach with back-fill / `create_vectorizer`) | "
        f"{i['embedplat']['setup_seconds']} | {i['pgai']['setup_seconds']} |",
        f"| initial: embedding until done (one run) | {i['embedplat']['work_seconds']} | "
        f"{i['pgai']['work_seconds']} |",
        "| … of which in the model (embedplat: its sync's calls; pgai: behind the endpoint) | "
        + pair(lambda k: f"{i[k]['run']['model_seconds']}")
        + " |",
        "| … model time per chunk embedded | "
        + pair(lambda k: f"{1000 * i[k]['run']['model_seconds'] / i[k]['chunks_embedded']:.1f} ms")
        + " |",
        "| … outside the model (chunking, queue, writes; pgai: also HTTP and JSON) | "
        + pair(lambda k: f"{i[k]['work_seconds'] - i[k]['run']['model_seconds']:.2f}")
        + " |",
        f"| HNSW index built afterwards | {i['embedplat']['index_seconds']} | "
        f"{i['pgai']['index_seconds']} (by hand: pgai builds one only with TimescaleDB scheduling) |",
        f"| sync / worker after the 50 edits | {_mmm(ed['embedplat']['seconds'])} | "
        f"{_mmm(ed['pgai']['seconds'])} |",
        f"| the `views` UPDATE itself | {_mmm(up['embedplat']['update_seconds'])} | "
        f"{_mmm(up['pgai']['update_seconds'])} |",
        f"| sync / worker after it | {_mmm(up['embedplat']['work_seconds'])} | "
        f"{_mmm(up['pgai']['work_seconds'])} |",
        f"| no-op, warm ({len(no['embedplat']['warm_chunks_embedded'])} runs each) | "
        f"{_mmm(no['embedplat']['warm_seconds'])} | {_mmm(no['pgai']['warm_seconds'])} |",
        f"| no-op, fresh CLI process ({len(no['embedplat']['cli_chunks_embedded'])} runs each) | "
        f"{_mmm(no['embedplat']['cli_seconds'])} | {_mmm(no['pgai']['cli_seconds'])} |",
        "",
        f"Filtered search, {s['queries']} SciFact queries (embedded beforehand by the same "
        f"model), {s['passes']} passes, filter {s['filter']} ({s['docs_per_author']} documents "
        "each); recall against an exact scan "
        "of the same rows:",
        "",
        "| query | p50 ms | p95 ms | queries with < 10 rows | fewer rows than the exact scan | recall@10 |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {s['variants'][v]} | {s[v]['p50_ms']} | {s[v]['p95_ms']} | "
            f"{s[v]['queries_short_of_k']} | {s[v]['queries_with_fewer_rows_than_exact']} | "
            f"{s[v]['recall_at_10_vs_exact_mean']} |"
            for v in variants
        ],
        "",
        _plans_note(s["pgai_plans"]),
        "",
        "Versions: pgai venv "
        + ", ".join(f"{k} {v}" for k, v in result["versions"]["pgai_venv"].items())
        + f"; embedplat {result['versions']['embedplat']}, sentence-transformers "
        f"{result['versions']['sentence_transformers']}, torch {result['versions']['torch']}. "
        f"Batching: embedplat sync {result['settings']['embedplat_sync_batch_size']} texts per "
        f"model call; pgai {result['settings']['pgai_processing']}. The full figures are in "
        "`results/pgai.json`.",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 documents, fewer rounds")
    parser.add_argument("--docs", type=int, help="documents in the table (default 1000)")
    args = parser.parse_args()
    n_docs = args.docs or (200 if args.quick else 1000)
    edit_rounds = 2 if args.quick else 3
    if n_docs < EDITS_PER_ROUND * edit_rounds:
        parser.error(
            f"--docs must be at least {EDITS_PER_ROUND * edit_rounds} (edits never repeat)"
        )
    with server() as url:
        result = run_benchmark(
            url,
            n_docs,
            edit_rounds=edit_rounds,
            update_rounds=1 if args.quick else 2,
            quick=args.quick,
        )
    print(write_result("pgai", result))


if __name__ == "__main__":
    main()
