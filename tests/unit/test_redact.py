"""No password reaches a message: connection strings are redacted by parsing them as libpq does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from embedplat.db.connection import (
    UNPARSEABLE,
    _explain,
    connect,
    parse_conninfo,
    redact,
    with_database,
)
from embedplat.errors import DatabaseUnavailableError

SECRET = "s3cretpw"


@pytest.mark.parametrize(
    ("conninfo", "expected"),
    [
        # key=value strings, as libpq and psql take them
        (
            f"host=127.0.0.1 port=1 user=bob password={SECRET} dbname=db",
            "user=bob password=*** dbname=db host=127.0.0.1 port=1",
        ),
        (f"host=h user=bob password='{SECRET} with spaces'", "user=bob password=*** host=h"),
        # URLs: the user part, percent-encoded, and a driver suffix (SQLAlchemy's spelling)
        (f"postgresql://bob:{SECRET}@db:5432/x", "postgresql://bob:***@db:5432/x"),
        ("postgresql://bob:s3cr%25et%40x@db:5432/x", "postgresql://bob:***@db:5432/x"),
        (f"postgresql+psycopg://bob:{SECRET}@db/x", "postgresql://bob:***@db/x"),
        (f"postgres://bob:{SECRET}@db/x", "postgresql://bob:***@db/x"),
        # a password given as a query parameter, alone or beside the user part's
        (
            f"postgresql://bob@db/x?password={SECRET}&sslmode=require",
            "postgresql://bob:***@db/x?sslmode=require",
        ),
        (
            f"postgresql://bob:other@db/x?password={SECRET}",
            "postgresql://bob:***@db/x",
        ),
        # the password of an SSL key
        (
            f"postgresql://bob@db/x?sslpassword={SECRET}",
            "postgresql://bob@db/x?sslpassword=***",
        ),
        # an unencoded '@' in the password: libpq reads the tail as part of the host name
        (
            f"postgresql://bob:p@{SECRET}@127.0.0.1:1/db",
            "postgresql://bob:***@127.0.0.1:1/db",
        ),
        # nothing secret: shown as given
        ("postgresql://bob@db:5432/x", "postgresql://bob@db:5432/x"),
        ("postgresql://a,b:5433,c/x", "postgresql://a,b:5433,c/x"),
        ("postgresql://[::1]:5432/x", "postgresql://[::1]:5432/x"),
        ("postgresql:///x?host=/var/run/postgresql", "postgresql:///x?host=/var/run/postgresql"),
        (
            "postgresql://postgres@127.0.0.1:5/embedplat?passfile=/home/me/.local/pgpass",
            "postgresql://postgres@127.0.0.1:5/embedplat?passfile=/home/me/.local/pgpass",
        ),
    ],
)
def test_every_form_is_redacted(conninfo: str, expected: str) -> None:
    shown = redact(conninfo)
    assert shown == expected
    assert SECRET not in shown
    # What is shown still parses, to the same parameters less the secrets.
    params = conninfo_to_dict(conninfo.replace("+psycopg", ""))
    shown_params = conninfo_to_dict(shown)
    assert {k for k in shown_params if shown_params[k] == "***"} <= {"password", "sslpassword"}
    for key in ("user", "dbname", "port", "sslmode", "passfile"):
        assert shown_params.get(key) == params.get(key)


@pytest.mark.parametrize(
    "conninfo",
    [
        f"postgresql://bob:{SECRET}%zz@db/x",  # a bad percent escape
        f"postgresql://bob:{SECRET}@db/x?password=%",
        f"host=db password='{SECRET}",  # unbalanced quote
        f"garbage {SECRET}",
    ],
)
def test_a_string_libpq_cannot_parse_is_not_shown(conninfo: str) -> None:
    assert redact(conninfo) == UNPARSEABLE
    with pytest.raises(DatabaseUnavailableError) as info:
        parse_conninfo(conninfo)
    assert SECRET not in str(info.value)
    # connect() refuses it the same way, before libpq could quote it in its own message.
    with pytest.raises(DatabaseUnavailableError) as info:
        connect(conninfo)
    assert SECRET not in str(info.value)


def test_an_unencoded_at_sign_is_refused_without_echoing_the_password() -> None:
    with pytest.raises(DatabaseUnavailableError, match="%40") as info:
        connect(f"postgresql://bob:p@{SECRET}@127.0.0.1:1/db")
    assert SECRET not in str(info.value)


def test_connection_errors_carry_no_password() -> None:
    url = f"host=127.0.0.1 port=1 user=bob password={SECRET} dbname=db"
    err = _explain(url, psycopg.OperationalError(f"something quoted {SECRET} back"))
    assert SECRET not in str(err) and "password=***" in str(err)


def test_with_database_keeps_the_query_string() -> None:
    url = "postgresql://postgres@127.0.0.1:5/embedplat?passfile=/home/me/pgpass"
    assert with_database(url, "other") == (
        "postgresql://postgres@127.0.0.1:5/other?passfile=/home/me/pgpass"
    )
    assert conninfo_to_dict(with_database("host=h dbname=x", "other")) == {
        "host": "h",
        "dbname": "other",
    }


@pytest.mark.parametrize(
    "url",
    [
        f"host=127.0.0.1 port=1 user=bob password={SECRET} dbname=db",
        f"postgresql://bob@127.0.0.1:1/db?password={SECRET}",
        f"postgresql://bob:p@{SECRET}@127.0.0.1:1/db",
        f"postgresql://bob:{SECRET}%@127.0.0.1:1/db",
    ],
)
def test_the_cli_never_prints_the_password(url: str, tmp_path: Path) -> None:
    # The command from the report, end to end: nothing listens on port 1.
    cli = Path(sys.executable).with_name("embedplat")
    env = {**os.environ, "EMBEDPLAT_DATABASE_URL": url, "EMBEDPLAT_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(cli), "status"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "error:" in done.stderr
    assert SECRET not in done.stdout + done.stderr
