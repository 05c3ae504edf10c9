"""The embedded PostgreSQL server: start, reuse, stop, restart, concurrent starts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from embedplat.db.connection import check_database
from embedplat.db.embedded import EmbeddedServer


@pytest.fixture
def home() -> Iterator[Path]:
    """A home outside pytest's tmp_path: as root, a concurrent pytest session resets
    /tmp/pytest-of-root to 0700, which would lock the server's service user out of it."""
    folder = Path(tempfile.mkdtemp(prefix="embedplat-server-test-"))
    yield folder / "home"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def server(home: Path) -> Iterator[EmbeddedServer]:
    s = EmbeddedServer(home, durable=False)
    yield s
    s.stop()


def test_start_reuse_stop_restart_keeps_data(server: EmbeddedServer) -> None:
    assert server.status().running is False
    url = server.start()
    first_pid = server.status().pid
    pgvector = check_database(url)
    # Compared as numbers: as strings "0.10" < "0.8".
    assert tuple(int(part) for part in pgvector.split(".")[:2]) >= (0, 8), pgvector
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone() == (pgvector,)
        assert conn.info.server_version >= 150000
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    assert server.start() == url  # reuse: same server, same URL
    assert server.status().pid == first_pid

    assert server.stop() is True
    assert server.status().running is False
    assert server.stop() is False

    url_again = server.start()  # restart after stop, data persisted, port remembered
    assert url_again == url
    assert server.status().pid != first_pid
    with psycopg.connect(url_again) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == (42,)


def test_concurrent_starts_share_one_server(home: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from embedplat.db.embedded import EmbeddedServer;"
        "print(EmbeddedServer(Path(sys.argv[1]), durable=False).start())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        outputs.append(out.decode().strip())
    server = EmbeddedServer(home, durable=False)
    try:
        assert len(set(outputs)) == 1
        status = server.status()
        assert status.running and status.url == outputs[0]
        # Exactly one postmaster for this data directory.
        postmasters = [
            proc.pid
            for proc in psutil.process_iter(["cmdline"])
            if proc.info["cmdline"]
            and proc.info["cmdline"][0].endswith("/postgres")
            and str(server.data_dir) in proc.info["cmdline"]
        ]
        assert len(postmasters) == 1, postmasters
    finally:
        server.stop()
