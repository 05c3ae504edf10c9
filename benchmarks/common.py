"""Shared benchmark plumbing: a throw-away embedded PostgreSQL, fresh databases, result files."""

from __future__ import annotations

import json
import os
import platform as py_platform
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from embedplat.config import Settings
from embedplat.db import migrate
from embedplat.db.connection import libpq_url, with_database
from embedplat.db.embedded import EmbeddedServer
from embedplat.db.vectors import COPY_SIGNATURE, COPY_TRAILER, copy_rows

HERE = Path(__file__).resolve().parent
# EMBEDPLAT_BENCH_RESULTS: write elsewhere (a trial run must not replace the stored figures).
RESULTS = Path(os.environ.get("EMBEDPLAT_BENCH_RESULTS") or HERE / "results")
WORK = HERE / ".work"
# Real text for measuring: ../shared/data relative to the repository root, unless overridden.
DATA = Path(os.environ.get("EMBEDPLAT_BENCH_DATA") or HERE.parent.parent / "shared" / "data")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": py_platform.python_version(),
        "machine": py_platform.machine(),
        "date": today(),
    }


@contextmanager
def server() -> Iterator[str]:
    """URL of a benchmark-only embedded server (durable, like a user's)."""
    external = os.environ.get("EMBEDPLAT_BENCH_DATABASE_URL")
    if external:
        yield external
        return
    srv = EmbeddedServer(WORK / "pg", durable=True)
    already_running = srv.status().running
    url = srv.start()
    try:
        yield url
    finally:
        # Leave the server running when another benchmark process started it or uses it now.
        if not already_running and not _others_connected(url):
            srv.stop()


def _others_connected(url: str) -> bool:
    try:
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0])


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, migrated database; dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    base = libpq_url(server_url)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(base, name)  # keeps the rest (a passfile, sslmode, ...)
    migrate.upgrade(url)
    try:
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def settings() -> Settings:
    return Settings(home=WORK / "home")


def require_data(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        raise SystemExit(
            f"benchmark data not found: {path} (expected ../shared/data relative to the "
            "repository root, or the folder named by EMBEDPLAT_BENCH_DATA)"
        )
    return path


def scifact_docs(n: int) -> list[dict[str, Any]]:
    """The first ``n`` documents of SciFact's corpus.jsonl that have an abstract."""
    docs: list[dict[str, Any]] = []
    with require_data("scifact", "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            if doc.get("text"):
                docs.append(doc)
            if len(docs) >= n:
                break
    return docs


def today() -> str:
    return time.strftime("%Y-%m-%d")


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write results/<name>.json for a result measured in one go: dated as a whole."""
    return _write(name, {"measured_at": today(), **result})


def write_parts(name: str, new: dict[str, dict[str, Any]], parts: tuple[str, ...]) -> Path:
    """Write results/<name>.json, a file of several ``parts`` that can be measured separately
    (``--only`` re-runs some): the ``new`` parts are dated now (``measured_at`` and
    ``machine`` in each part), the others are kept from the file as it was, with their dates.

    A kept part written before parts were dated gets the date of the file it comes from, so
    this write (which re-dates the file) does not pass it off as new.
    """
    path = RESULTS / f"{name}.json"
    previous: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    out: dict[str, Any] = {}
    for key in parts:
        if key in new:
            out[key] = {**new[key], "measured_at": today(), "machine": machine()}
        elif isinstance(old := previous.get(key), dict):
            if "measured_at" not in old and "machine" in previous:
                old = {**old, "measured_at": previous["machine"]["date"]}
                old.setdefault("machine", previous["machine"])
            out[key] = old
    return _write(name, out)


def measured_line(result: dict[str, Any], part: dict[str, Any] | None = None) -> str:
    """The "_measured <date>, <n> CPUs, Python <v>_" line of a part of ``result`` (or of the
    whole file): the part's own date where it has one, else the file's (files from before
    parts were dated).
    """
    m = {**result.get("machine", {}), **(part or {}).get("machine", {})}
    date = (part or {}).get("measured_at") or result.get("measured_at") or m.get("date")
    if date is None:
        return "_measured: unknown_"
    return f"_measured {date}, {m.get('cpus', '?')} CPUs, Python {m.get('python', '?')}_"


def _write(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "machine": machine(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def latency_percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 and p95 of a list of durations in seconds, in milliseconds."""
    ms = [1000 * s for s in seconds]
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
    }


def load_direct(
    url: str,
    collection: str,
    vectors: np.ndarray,
    text: Callable[[int], str],
    metadata: Callable[[int], dict[str, Any]],
) -> None:
    """A collection of one record, chunk and embedding per vector (record ``i``: id ``v{i}``,
    ``text(i)``, ``metadata(i)``), written straight into embedplat's tables with binary COPY
    under a model row of its own (``synthetic-<dims>``): no model runs, nothing is pending."""
    n, dims = vectors.shape
    with psycopg.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        model_id = cur.execute(
            "INSERT INTO embedplat.embedding_models (name, dimensions, normalized, fingerprint) "
            "VALUES (%s, %s, true, %s) RETURNING id",
            (f"synthetic-{dims}", dims, f"synthetic-{collection}"),
        ).fetchone()[0]  # type: ignore[index]
        cid = cur.execute(
            "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap) "
            "VALUES (%s, %s, 200, 32) RETURNING id",
            (collection, f"synthetic-{dims}"),
        ).fetchone()[0]  # type: ignore[index]
        with cur.copy(
            "COPY embedplat.records (collection_id, external_id, content, metadata) "
            "FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "text", "text", "jsonb"])
            for i in range(n):
                copy.write_row((cid, f"v{i}", text(i), metadata(i)))
        cur.execute(
            "INSERT INTO embedplat.chunks "
            "(record_id, collection_id, ordinal, content, char_start, char_end, token_count) "
            "SELECT id, collection_id, 0, content, 0, length(content), 200 "
            "FROM embedplat.records WHERE collection_id = %s ORDER BY id",
            (cid,),
        )
        cur.execute(
            "UPDATE embedplat.records SET chunked_hash = content_hash WHERE collection_id = %s",
            (cid,),
        )
        cur.execute("CREATE TEMP TABLE staging (n bigint, embedding vector) ON COMMIT DROP")
        with cur.copy("COPY staging (n, embedding) FROM STDIN (FORMAT BINARY)") as copy:
            step = 50_000  # one COPY stream, written in parts of this many rows
            for start in range(0, n, step):
                part = copy_rows(
                    np.arange(start, min(start + step, n)), vectors[start : start + step]
                )
                if start:
                    part = part[len(COPY_SIGNATURE) :]
                if start + step < n:
                    part = part[: -len(COPY_TRAILER)]
                copy.write(part)
        cur.execute(
            "INSERT INTO embedplat.embeddings "
            "(chunk_id, model_id, collection_id, record_id, text_hash, embedding) "
            "SELECT ch.id, %s, %s, r.id, ch.text_hash, s.embedding "
            "FROM staging s JOIN embedplat.records r "
            "  ON r.collection_id = %s AND r.external_id = 'v' || s.n "
            "JOIN embedplat.chunks ch ON ch.record_id = r.id",
            (model_id, cid, cid),
        )
        cur.execute(
            "UPDATE embedplat.collections SET active_model_id = %s WHERE id = %s",
            (model_id, cid),
        )
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(
            "DELETE FROM embedplat.embedding_queue q USING embedplat.collections c "
            "WHERE c.id = q.collection_id AND c.name = %s",
            (collection,),
        )
        conn.execute("VACUUM ANALYZE embedplat.records, embedplat.chunks, embedplat.embeddings")
        conn.execute("CHECKPOINT")


def recall_at_k(got: list[list[int]], want: list[list[int]]) -> float:
    """Mean share of each exact top-k found (rounded to 4 places)."""
    return round(
        float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)])), 4
    )
