"""Fixtures for the worker tests: a private redis-server per test, real Celery processes.

Every test gets its own ``redis-server`` on a free port (so a test may restart it) and starts
real worker / beat / listener processes with ``EMBEDPLAT_DATABASE_URL`` and
``EMBEDPLAT_BROKER_URL`` pointing at its own database and broker. The processes load the test
embedders through ``EMBEDPLAT_PLUGINS`` (:mod:`tests.fix_embedders`), whose
``EMBEDPLAT_TEST_EMBED_LOG`` and ``EMBEDPLAT_TEST_EMBED_DELAY`` make every model call slow and
logged (:func:`observed`), so a test can kill a worker mid-batch and prove that no text was
embedded twice. Loaded as a pytest plugin from ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from embedplat.config import Settings
from embedplat.db.connection import libpq_url
from embedplat.status import collection_status
from tests.fix_embedders import (
    EMBED_DELAY_VARIABLE,
    EMBED_GATE_VARIABLE,
    EMBED_LOG_VARIABLE,
    TEST_BACKEND,
    plugin_env,
)
from tests.waiting import wait_for

__all__ = [
    "MODEL",
    "Proc",
    "RedisServer",
    "Stack",
    "chunk_texts",
    "embeddings_count",
    "free_port",
    "leased_by",
    "observed",
    "paragraphs",
    "stack_env",
    "stale_total",
    "wait_for",
]

MODEL = "test-hash-64"
CELERY = Path(sys.executable).with_name("celery")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server process of our own, without persistence, restartable on its port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (scripts/test installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._answers, 120, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)
        self.proc = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Proc:
    """A started process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for_log(self, needle: str, timeout: float = 300, count: int = 1) -> None:
        def seen() -> bool:
            if not self.alive():
                pytest.fail(f"{self.name} exited ({self.popen.returncode}):\n{self.text()[-3000:]}")
            return self.text().count(needle) >= count

        wait_for(seen, timeout, f"{needle!r} in the log of {self.name}", every=0.2)


@dataclass
class Stack:
    """Starts worker, beat and listener processes for one test and stops them afterwards."""

    tmp: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / f"{name}.out"
        env = {**self.env, **(extra_env or {})}
        popen = subprocess.Popen(
            argv,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.tmp),
            start_new_session=True,  # its own process group, so teardown stops its children
        )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def worker(
        self,
        name: str,
        extra_env: dict[str, str] | None = None,
        *,
        pool: str = "solo",
        concurrency: int = 1,
        wait: bool = True,
    ) -> Proc:
        argv = [
            str(CELERY),
            "-A",
            "embedplat_workers.app",
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            "-n",
            f"{name}@%h",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
        proc = self.spawn(name, argv, extra_env)
        if wait:
            proc.wait_for_log(" ready.")
        return proc

    def beat(self, name: str, extra_env: dict[str, str] | None = None) -> Proc:
        argv = [
            str(CELERY),
            "-A",
            "embedplat_workers.app",
            "beat",
            "--loglevel=INFO",
            f"--schedule={self.tmp / (name + '-schedule')}",
        ]
        return self.spawn(name, argv, extra_env)

    def listener(self, extra_env: dict[str, str] | None = None) -> Proc:
        proc = self.spawn(
            "listener", [sys.executable, "-m", "embedplat_workers.listener"], extra_env
        )
        proc.wait_for_log("listening on embedplat_changes")
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=20)

    def dump_logs(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.text()[-4000:]}" for p in self.procs)


def stack_env(db_url: str, broker_url: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDPLAT_")}
    env.update(
        {
            "EMBEDPLAT_DATABASE_URL": db_url,
            "EMBEDPLAT_BROKER_URL": broker_url,
            "EMBEDPLAT_HOME": str(tmp / "home"),
            # Tests start beat only where they need it; the sweep is off unless asked for.
            "EMBEDPLAT_SWEEP_SECONDS": "0",
            "EMBEDPLAT_BACKEND": TEST_BACKEND,  # see tests/fix_embedders.py
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            **plugin_env(),
        }
    )
    return env


def observed(log: Path, delay_s: float, gate: Path | None = None) -> dict[str, str]:
    """Environment for a worker whose model calls sleep ``delay_s``, wait for the file ``gate``
    (if given) and are logged to ``log``."""
    env = {EMBED_LOG_VARIABLE: str(log), EMBED_DELAY_VARIABLE: str(delay_s)}
    if gate is not None:
        env[EMBED_GATE_VARIABLE] = str(gate)
    return env


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, db_url: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Stack]:
    s = Stack(tmp_path, stack_env(db_url, redis_server.url, tmp_path))
    try:
        yield s
    finally:
        s.stop_all()
        # Shown by pytest only when the test failed.
        print(s.dump_logs())


@pytest.fixture
def celery_client(redis_server: RedisServer) -> Iterator[Any]:
    """A Celery app on the test's broker, for sending tasks by name."""
    from embedplat_workers.app import create_app
    from embedplat_workers.settings import WorkerSettings

    client = create_app(WorkerSettings(base=Settings(broker_url=redis_server.url)))
    try:
        yield client
    finally:
        client.close()


def stale_total(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        return sum(s.stale for s in collection_status(conn))


def paragraphs(record: int, n: int, words: int = 20) -> str:
    return "\n\n".join(
        f"Record {record} paragraph {p} " + " ".join(f"w{record}x{p}y{i}" for i in range(words))
        for p in range(n)
    )


def chunk_texts(url: str, collection: str = "docs") -> list[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT ch.content FROM embedplat.chunks ch "
            "JOIN embedplat.collections c ON c.id = ch.collection_id WHERE c.name = %s",
            (collection,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def leased_by(url: str) -> list[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT DISTINCT leased_by FROM embedplat.embedding_queue WHERE leased_until > now()"
        ).fetchall()
    return [str(r[0]) for r in rows]


def embeddings_count(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SELECT count(*) FROM embedplat.embeddings").fetchone()
    assert row is not None
    return int(row[0])
