"""What the CLI prints of user text, and the one line for a database error (no database)."""

from __future__ import annotations

import io
import json

import psycopg
import pytest
from psycopg import errors as pg_errors

from embedplat.cli.app import database_error_line, fail, handle_errors
from embedplat.cli.output import PrintableWriter, json_line, shown

HOSTILE = "a\nb\tc\x1b[31md\u202ee\u2028f\ud800g\U000e0001h"


def test_shown_escapes_every_non_printable_character_and_keeps_the_rest() -> None:
    assert shown(HOSTILE) == "a\\nb\\tc\\x1b[31md\\u202ee\\u2028f\\ud800g\\U000e0001h"
    assert shown("[/bold] café 東京 :warning:") == "[/bold] café 東京 :warning:"
    assert shown(42) == "42"
    assert shown(HOSTILE).isprintable()


def test_json_line_is_the_same_json_with_only_printable_characters() -> None:
    value = {"id": HOSTILE.replace("\ud800", ""), "text": "café [/bold]", "n": 1}
    line = json_line(value)
    assert line.isprintable()
    assert json.loads(line) == value
    assert "café [/bold]" in line  # UTF-8 stays as it is
    assert "\\u202e" in line and "\\udb40\\udc01" in line  # U+E0001 as a surrogate pair
    lone = json_line({"id": "x\ud800"})
    assert lone.isprintable() and json.loads(lone) == {"id": "x\ud800"}


def test_printable_writer_escapes_inside_json_and_keeps_line_ends() -> None:
    out = io.StringIO()
    writer = PrintableWriter(out)
    rows = [{"id": "r\u202eevil", "text": "x\x1by"}, {"id": "plain", "text": "ok"}]
    for row in rows:
        writer.write(json.dumps(row, ensure_ascii=False))
        writer.write("\n")
    writer.flush()
    text = out.getvalue()
    assert text.count("\n") == 2 and text.replace("\n", "").isprintable()
    assert [json.loads(line) for line in text.splitlines()] == rows


def test_fail_prints_one_escaped_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        fail("collection 'x\u202ey' not found\nsecond line\x1b[2J")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        "error: collection 'x\\u202ey' not found second line\\x1b[2J\n"
    )


def test_a_lost_connection_is_named_with_what_to_do() -> None:
    closed = psycopg.OperationalError("the connection is closed")
    assert database_error_line(closed, "sync") == (
        "sync: lost the database connection: the connection is closed; check that the server "
        "runs (`embedplat db status`) and run this again"
    )
    shutdown = pg_errors.AdminShutdown("terminating connection due to administrator command")
    line = database_error_line(shutdown, "search")
    assert line is not None and line.startswith(
        "search: lost the database connection: terminating connection due to administrator"
    )


def test_other_database_errors_name_their_kind_and_sqlstate() -> None:
    line = database_error_line(pg_errors.UniqueViolation("duplicate key value"), "ingest")
    assert line == "ingest: database error UniqueViolation (SQLSTATE 23505): duplicate key value"
    # A server error embedplat's SQL functions raise reads as the library's own error.
    mapped = database_error_line(pg_errors.InvalidParameterValue("k must be at least 1"), "search")
    assert mapped == "k must be at least 1"
    assert database_error_line(ValueError("not a database error"), "sync") is None


def test_the_database_password_never_reaches_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://bob:s3cr%40t@db.example:5432/app"
    monkeypatch.setenv("EMBEDPLAT_DATABASE_URL", url)
    error = psycopg.OperationalError(f"connection to {url} failed: password s3cr@t rejected")
    line = database_error_line(error, "status")
    assert line is not None
    assert "s3cr" not in line and "***" in line and "db.example" in line


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            IsADirectoryError(21, "Is a directory", "/tmp/out"),
            "error: embedplat: Is a directory: /tmp/out",
        ),
        (
            pg_errors.ForeignKeyViolation("insert violates foreign key constraint"),
            "error: embedplat: database error ForeignKeyViolation (SQLSTATE 23503): insert "
            "violates foreign key constraint",
        ),
        (
            UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"),
            "error: embedplat: text that is not valid UTF-8: surrogates not allowed",
        ),
    ],
)
def test_the_decorator_turns_unchecked_failures_into_one_line(
    error: Exception, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    @handle_errors()
    def command() -> None:
        raise error

    with pytest.raises(SystemExit) as exit_info:
        command()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [line]


def test_a_programming_error_still_shows_its_traceback() -> None:
    @handle_errors()
    def command() -> None:
        raise KeyError("a bug, not a failure to report")

    with pytest.raises(KeyError):
        command()
