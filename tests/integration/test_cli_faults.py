"""Faults during a command end in one ``error:`` line: the database server shutting down in
the middle of a sync, and SIGTERM (exit status 143, leases handed back)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from embedplat.cli.app import EXIT_TERMINATED
from embedplat.db.connection import libpq_url
from embedplat.db.embedded import EmbeddedServer
from tests.fix_cli import _env, run
from tests.fix_embedders import EMBED_DELAY_VARIABLE
from tests.waiting import wait_for

ROWS = "".join(
    json.dumps({"id": f"r{i}", "text": f"word{i} and some other words"}) + "\n" for i in range(120)
)


def _leased(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM embedplat.embedding_queue WHERE leased_by IS NOT NULL"
        ).fetchone()
    return int(row[0]) if row else 0


def _slow_sync(env: dict[str, str]) -> subprocess.Popen[str]:
    """`embedplat sync` whose every model call sleeps, in batches of 4 chunks."""
    return subprocess.Popen(
        [sys.executable, "-m", "embedplat.cli", "sync", "--batch-size", "4"],
        env={**env, EMBED_DELAY_VARIABLE: "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def own_server() -> Iterator[tuple[EmbeddedServer, str]]:
    """An embedded server of this test alone (it gets stopped), migrated; (server, URL).

    Its home is outside pytest's tmp_path: as root, a concurrent pytest session resets
    /tmp/pytest-of-root to 0700, which would lock the server's service user out of it.
    """
    folder = Path(tempfile.mkdtemp(prefix="embedplat-fault-test-"))
    server = EmbeddedServer(folder / "home", durable=False)
    try:
        url = server.start()
        yield server, url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_server_shut_down_during_a_sync_is_one_error_line(
    own_server: tuple[EmbeddedServer, str], tmp_path: Path
) -> None:
    server, url = own_server
    env = _env(EMBEDPLAT_DATABASE_URL=url, EMBEDPLAT_HOME=str(tmp_path / "home"))
    run(["init"], env)
    run(["collection", "create", "docs", "--model", "test-hash-16"], env)
    run(["ingest", "docs", "-"], env, stdin=ROWS)
    proc = _slow_sync(env)
    try:
        # Stopped while the sync holds leases, i.e. inside a model call.
        wait_for(lambda: proc.poll() is not None or _leased(url) > 0, 300, "the sync to claim")
        assert proc.poll() is None, proc.communicate()
        assert server.stop() is True
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: sync: lost the database connection: "), line
    assert "embedplat db status" in line
    # The URL carries no secret, and a message that named it would show it redacted.
    assert "password" not in line


def test_sigterm_ends_a_sync_cleanly_and_hands_its_leases_back(
    url_env: dict[str, str], db_url: str
) -> None:
    run(["collection", "create", "docs", "--model", "test-hash-16"], url_env)
    run(["ingest", "docs", "-"], url_env, stdin=ROWS)
    proc = _slow_sync(url_env)
    try:
        wait_for(lambda: proc.poll() is not None or _leased(db_url) > 0, 300, "the sync to claim")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_TERMINATED == 143, (out, err)
    assert err.strip().splitlines() == ["error: terminated"]
    # Released on the way out (sync's finally), not left for the lease to expire.
    assert _leased(db_url) == 0
    with psycopg.connect(libpq_url(db_url)) as conn:
        assert conn.execute("SELECT count(*) FROM embedplat.lease_holders").fetchone() == (0,)
    # Nothing is left leased to the dead process: the next sync takes and finishes everything.
    report = json.loads(run(["sync", "--json"], url_env).stdout)
    assert report["chunks_leased_elsewhere"] == 0 and report["failed_collections"] == []
    (docs,) = json.loads(run(["status", "--json"], url_env).stdout)["collections"]
    assert (docs["embedded"], docs["stale"]) == (120, 0)
