"""Connection failures become one clear sentence that says what to do."""

from __future__ import annotations

import psycopg

from embedplat.db.connection import _explain, redact


def test_password_is_redacted() -> None:
    assert redact("postgresql://me:s3cr%25et@db:5432/x") == "postgresql://me:***@db:5432/x"


def test_bad_password_message() -> None:
    err = _explain(
        "postgresql://me:pw@db/x",
        psycopg.OperationalError('FATAL:  password authentication failed for user "me"'),
    )
    assert "refused the login" in str(err) and "pw@" not in str(err)


def test_unreachable_message() -> None:
    err = _explain("postgresql://db/x", psycopg.OperationalError("connection refused"))
    assert "cannot reach the database" in str(err) and "EMBEDPLAT_DATABASE_URL" in str(err)
