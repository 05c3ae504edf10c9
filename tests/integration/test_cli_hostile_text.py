"""Hostile text through every command: names and ids that look like rich markup or carry
control characters are printed literally or escaped, never interpreted, on a pipe and on a
terminal (a pseudo-terminal, so rich's terminal path runs)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from embedplat.db.connection import libpq_url
from tests.fix_cli import run

MARKUP_NAMES = ["[/bold]", "[red]x[/red]"]
# Made through SQL: the library refuses such names at create, but a database may hold them.
NEWLINE_NAME = "nl\nname"
BIDI_NAME = "bidi\u202ename"
IDS = ["a\nb", "r\u202eevil", "[/bold]", "esc\x1b[31mred", "tab\tid", ":warning:"]
TEXTS = {
    "a\nb": "hello world apple",
    "r\u202eevil": "hello there [/bold] \x1b[31mred apple",
    "[/bold]": "hello again [red]apple",
    "esc\x1b[31mred": "hello world apple",  # the same text as "a\nb": a duplicate pair
    "tab\tid": "hello cherry\u202eapple",
    ":warning:": "hello :warning: apple [/]",
}
# Raw characters that must never reach the output of a pipe.
RAW = ("\x1b", "\u202e", "\t")


def _rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": i, "text": t, "metadata": {"tag": "[/bold]", "ctl": "x\x1by"}}) + "\n"
            for i, t in TEXTS.items()
        ),
        encoding="utf-8",
    )
    return path


def run_on_terminal(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    """``embedplat ARGS`` with stdin, stdout and stderr on a pseudo-terminal: (status, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedplat.cli", *args],
        env={**env, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal's last open end
                break
            if not data:
                break
            chunks.append(data)
        status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return status, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def hostile(url_env: dict[str, str], db_url: str, tmp_path: Path) -> dict[str, str]:
    """Four collections with hostile names, each holding records with hostile ids and text,
    chunked but not embedded yet."""
    for name in MARKUP_NAMES:
        run(["collection", "create", name, "--model", "test-hash-16"], url_env)
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        for name in (NEWLINE_NAME, BIDI_NAME):
            conn.execute(
                "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap)"
                " SELECT %s, model_name, chunk_tokens, chunk_overlap FROM embedplat.collections"
                " WHERE name = %s",
                (name, MARKUP_NAMES[0]),
            )
    rows = _rows_file(tmp_path)
    for name in [*MARKUP_NAMES, NEWLINE_NAME, BIDI_NAME]:
        run(["ingest", name, str(rows)], url_env)
    return url_env


def _ok(proc: subprocess.CompletedProcess[str], raw: tuple[str, ...] = RAW) -> str:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for char in raw:
        assert char not in proc.stdout and char not in proc.stderr, (char, proc.stdout)
    return proc.stdout


def test_every_command_prints_hostile_names_and_ids_literally(hostile: dict[str, str]) -> None:
    env = hostile
    # On a terminal first, while there is work: sync draws its progress bars with the names.
    status, out = run_on_terminal(["sync", "--no-index"], env)
    assert status == 0 and "Traceback" not in out, out
    assert "[/bold]: embed chunks" in out and "[red]x[/red]: embed chunks" in out
    assert "nl\\nname: embed chunks" in out and "bidi\\u202ename: embed chunks" in out
    assert "\u202e" not in out
    report = json.loads(run(["sync", "--json"], env).stdout)
    assert report["chunks_embedded"] == 0 and report["failed_collections"] == []

    table = _ok(run(["status"], env, check=False))
    for shown in [*MARKUP_NAMES, "nl\\nname", "bidi\\u202ename"]:
        assert f"│ {shown} " in table, table
    status, out = run_on_terminal(["status"], env)
    assert status == 0 and "Traceback" not in out and "[/bold]" in out and "\u202e" not in out
    assert "[red]x[/red]" in out and "nl\\nname" in out

    listing = json.loads(_ok(run(["status", "--json"], env, check=False)))
    assert {c["name"] for c in listing["collections"]} == {*MARKUP_NAMES, NEWLINE_NAME, BIDI_NAME}
    assert {c["embedded"] for c in listing["collections"]} == {len(IDS)}
    # Tab-separated: its own tabs only, the names' are escaped.
    listing_text = _ok(run(["collection", "list"], env, check=False), raw=RAW[:2])
    lines = listing_text.splitlines()
    assert all(line.count("\t") == 3 for line in lines), lines
    assert sorted(line.split("\tmodel=")[0] for line in lines) == sorted(
        [*MARKUP_NAMES, "nl\\nname", "bidi\\u202ename"]
    )

    for name in [MARKUP_NAMES[0], BIDI_NAME]:
        found = _ok(run(["search", name, "hello", "-k", "10"], env, check=False))
        for escaped in ("a\\nb", "r\\u202eevil", "[/bold]", "esc\\x1b[31mred", "tab\\tid"):
            assert f"  {escaped}  " in found, found
        assert "[/bold] \\x1b[31mred apple" in found  # chunk text: escaped, markup as is
        hybrid = _ok(run(["search", name, "hello", "--hybrid"], env, check=False))
        assert "  r\\u202eevil  " in hybrid
        similar = _ok(run(["similar", name, "r\u202eevil"], env, check=False))
        assert "  a\\nb  " in similar and "r\\u202eevil  " not in similar
        pairs = _ok(run(["duplicates", name], env, check=False)).splitlines()
        assert pairs[0] in ("1.000  a\\nb  esc\\x1b[31mred", "1.000  esc\\x1b[31mred  a\\nb"), pairs
        groups = _ok(run(["duplicates", name, "--groups"], env, check=False)).splitlines()
        assert sorted(line.split()[-1] for line in groups) == ["a\\nb", "esc\\x1b[31mred"]
        scores = _ok(run(["anomalies", name], env, check=False))
        assert sorted(line.split("%  ")[1] for line in scores.splitlines()) == sorted(
            ["a\\nb", "r\\u202eevil", "[/bold]", "esc\\x1b[31mred", "tab\\tid", ":warning:"]
        )
        exported = _ok(run(["export", name], env, check=False))
        # The same JSON, escaped: every id and text reads back exactly as stored.
        back = {r["id"]: r for r in map(json.loads, exported.splitlines())}
        assert {i: r["text"] for i, r in back.items()} == TEXTS
        assert back["[/bold]"]["metadata"] == {"tag": "[/bold]", "ctl": "x\x1by"}
        for json_out in (
            run(["search", name, "hello", "--json"], env, check=False),
            run(["similar", name, "[/bold]", "--json"], env, check=False),
        ):
            assert json.loads(_ok(json_out).splitlines()[0])

    # On a terminal: each command once, with what it must show.
    for args, expected in (
        (["search", NEWLINE_NAME, "hello"], "  r\\u202eevil  "),
        (["similar", BIDI_NAME, "a\nb"], "  esc\\x1b[31mred  "),
        (["duplicates", MARKUP_NAMES[1]], "esc\\x1b[31mred"),
        (["anomalies", BIDI_NAME], "%  tab\\tid"),
        (["export", NEWLINE_NAME], '"id":"r\\u202eevil"'),
        (["collection", "list"], "nl\\nname\tmodel="),
    ):
        status, out = run_on_terminal(args, env)
        assert status == 0 and "Traceback" not in out, (args, out)
        assert expected in out, (args, out)
        # These commands print plain lines: no raw ESC or bidi override at all.
        assert "\x1b" not in out and "\u202e" not in out, (args, out)


def test_an_error_naming_hostile_text_stays_one_escaped_line(hostile: dict[str, str]) -> None:
    proc = run(["similar", BIDI_NAME, "no\u202esuch\nid"], hostile, check=False)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ") and "\u202e" not in line and "no\\u202esuch" in line
    missing = run(["search", "[/bold] gone\x1b[2J", "hello"], hostile, check=False)
    assert missing.returncode == 1
    (line,) = missing.stderr.splitlines()
    assert "[/bold] gone\\x1b[2J" in line and "\x1b" not in line
