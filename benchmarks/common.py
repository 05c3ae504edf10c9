"""Shared benchmark plumbing: a throw-away embedded PostgreSQL, fresh databases, result files."""

from __future__ import annotations

import json
import os
import platform as py_platform
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from embedplat.config import Settings
from embedplat.db import migrate
from embedplat.db.connection import libpq_url
from embedplat.db.embedded import EmbeddedServer

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE / ".work"
DATA = HERE.parent.parent / "shared" / "data"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": py_platform.python_version(),
        "machine": py_platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
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
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + f"/{name}"
    migrate.upgrade(url)
    try:
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settings() -> Settings:
    return Settings(home=WORK / "home")


def require_data(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        raise SystemExit(
            f"benchmark data not found: {path} (expected ../shared/data next to the repo)"
        )
    return path


def write_result(name: str, result: dict[str, Any]) -> Path:
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
