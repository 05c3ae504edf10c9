"""Bad input through the CLI is one clear line and loses nothing good: queries that are blank,
hold a NUL or are not UTF-8; ingest rows over a limit with --on-error skip; an input with
nothing good; duplicate ids named; work left to other processes named by sync and status."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.sync import claim_chunks, hold_lease_liveness, sync
from tests.fix_cli import run
from tests.fix_embedders import HashEmbedder

ROWS = '{"id": "a", "text": "apple banana"}\n{"id": "b", "text": "cherry apple"}\n'


@pytest.fixture
def docs(url_env: dict[str, str]) -> dict[str, str]:
    run(["collection", "create", "docs", "--model", "test-hash-16"], url_env)
    run(["ingest", "docs", "-"], url_env, stdin=ROWS)
    run(["sync"], url_env)
    return url_env


def _one_line(proc: Any, status: int) -> str:
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return str(proc.stderr.splitlines()[0])


@pytest.mark.parametrize("query", ["   ", "\t", ""])
def test_a_blank_query_is_a_usage_error(docs: dict[str, str], query: str) -> None:
    proc = run(["search", "docs", query], docs, check=False)
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: the query is blank; give the words to search for",
        "Try 'embedplat search --help' for help.",
    ]
    assert proc.returncode == 2
    assert run(["search", "docs", "  apple "], docs).stdout.startswith("# ")


def test_query_bytes_that_are_not_utf8_are_refused(docs: dict[str, str]) -> None:
    # Python hands undecodable argv bytes over as lone surrogates; psycopg cannot send them.
    not_utf8 = os.fsdecode(b"apple \xff")
    for args in (["search", "docs", not_utf8], ["search", "docs", not_utf8, "--hybrid"]):
        line = _one_line(run(args, docs, check=False), 2)
        assert line == (
            "error: the query contains an unpaired UTF-16 surrogate (e.g. \\ud800); "
            "give valid UTF-8 text"
        )
    for args in (["similar", "docs", not_utf8], ["search", not_utf8, "apple"]):
        line = _one_line(run(args, docs, check=False), 2)
        assert "contains an unpaired UTF-16 surrogate" in line and "Invalid value for" in line


@pytest.mark.parametrize(
    ("escaped", "named"),
    [("\\u0000", "a NUL character (\\u0000)"), ("\\ud800", "an unpaired UTF-16 surrogate")],
)
@pytest.mark.parametrize("hybrid", [False, True])
def test_queries_file_with_a_nul_or_a_lone_surrogate_names_its_line(
    docs: dict[str, str], tmp_path: Path, escaped: str, named: str, hybrid: bool
) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"text": "apple"}\n{"text": "bad ' + escaped + ' query"}\n')
    args = ["search", "docs", "--queries", str(queries)] + (["--hybrid"] if hybrid else [])
    proc = run(args, docs, check=False)
    line = _one_line(proc, 1)
    assert proc.stderr.strip() == line and proc.stdout == ""
    assert line.startswith(f"error: {queries}:2: the query text contains {named}"), line


def test_skip_keeps_the_good_rows_when_ids_are_too_long_or_metadata_too_deep(
    url_env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "rows.jsonl"
    deep = "[" * 2_000 + "]" * 2_000
    nested: dict[str, Any] = {}
    for _ in range(70):
        nested = {"n": nested}
    data.write_text(
        "\n".join(
            [
                json.dumps({"id": "good-1", "text": "first good row"}),
                '{"id": "deep", "text": "x", "metadata": {"d": ' + deep + "}}",
                json.dumps({"id": "nested", "text": "x", "metadata": nested}),
                json.dumps({"id": "L" * 3_000, "text": "x"}),
                json.dumps({"id": "good-2", "text": "second good row"}),
            ]
        )
        + "\n"
    )
    failed = run(["ingest", "docs", str(data)], url_env, check=False)
    line = _one_line(failed, 1)
    assert line.startswith(f"error: {data}:2: the JSON line is nested too deeply, limit 64")
    proc = run(["ingest", "docs", str(data), "--on-error", "skip"], url_env)
    assert proc.stdout.strip() == (
        "docs: 2 inserted, 0 updated, 0 metadata-only, 0 unchanged, 3 rejected"
    )
    assert [line.split(": ")[0] for line in proc.stderr.splitlines()] == [
        f"  rejected {data}:2",
        f"  rejected {data}:3",
        f"  rejected {data}:4",
    ]
    assert "id of 3,000 bytes is over the 1,000-byte limit" in proc.stderr
    exported = [json.loads(line) for line in run(["export", "docs"], url_env).stdout.splitlines()]
    assert [r["id"] for r in exported] == ["good-1", "good-2"]


def test_skip_with_every_row_rejected_exits_1(url_env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": "x"}\n{"text": "no id"}\n')
    proc = run(["ingest", "docs", str(data), "--on-error", "skip"], url_env, check=False)
    assert proc.returncode == 1
    assert proc.stdout.strip().endswith("0 unchanged, 2 rejected")
    assert proc.stderr.splitlines() == [
        f"  rejected {data}:1: missing text field 'text' (absent, empty or blank)",
        f"  rejected {data}:2: missing id field 'id'",
        "error: nothing was ingested: every input row was rejected (2 rows, listed above)",
    ]
    as_json = run(
        ["ingest", "docs", str(data), "--on-error", "skip", "--json"], url_env, check=False
    )
    assert as_json.returncode == 1
    assert [p["line"] for p in json.loads(as_json.stdout)["problems"]] == [1, 2]
    assert as_json.stderr.splitlines() == [
        "error: nothing was ingested: every input row was rejected "
        "(2 rows, the problems are in the JSON above)"
    ]
    # An empty input is nothing accepted too.
    empty = run(["ingest", "docs", "-", "--on-error", "skip"], url_env, stdin="", check=False)
    assert empty.returncode == 1 and "every input row was rejected (1 row," in empty.stderr


def test_the_summary_names_duplicate_ids(url_env: dict[str, str]) -> None:
    rows = "".join(
        json.dumps(row) + "\n"
        for row in [
            {"id": 1, "text": "one"},
            {"id": "1", "text": "one again"},
            {"id": "b", "text": "bee"},
            {"id": "b", "text": "bee again"},
            {"id": "c", "text": "sea"},
        ]
    )
    proc = run(["ingest", "docs", "-"], url_env, stdin=rows)
    assert proc.stdout.strip() == (
        "docs: 3 inserted, 0 updated, 0 metadata-only, 0 unchanged, 0 rejected, "
        "2 duplicates (the later row won: '1', 'b')"
    )
    exported = {
        r["id"]: r["text"]
        for r in map(json.loads, run(["export", "docs"], url_env).stdout.split("\n")[:-1])
    }
    assert exported == {"1": "one again", "b": "bee again", "c": "sea"}


def _cells(line: str) -> list[str]:
    """The cells of one row of rich's table."""
    return [cell.strip() for cell in line.replace("┃", "│").strip().strip("│").split("│")]


def test_sync_and_status_name_work_leased_by_other_processes(
    platform: Platform, db_url: str, url_env: dict[str, str]
) -> None:
    platform.create_collection("docs", model="test-hash-16")
    platform.ingest("docs", [{"id": f"r{i}", "text": f"word{i} apple"} for i in range(12)])

    class Refuses(HashEmbedder):
        def embed(self, texts: Any) -> np.ndarray:
            raise KeyboardInterrupt  # stop right after chunking: every chunk stays queued

    with pytest.raises(KeyboardInterrupt):
        sync(lambda: psycopg.connect(libpq_url(db_url)), lambda name: Refuses(16), "docs")
    (info,) = platform.collections()
    with (
        psycopg.connect(libpq_url(db_url), autocommit=True) as alive,
        psycopg.connect(libpq_url(db_url), autocommit=True) as gone,
    ):
        hold_lease_liveness(alive, "busy-worker")
        assert (
            len(claim_chunks(alive, info.id, limit=5, lease_seconds=3600, worker_id="busy-worker"))
            == 5
        )
        # Leased without the liveness lock: a holder that died.
        assert (
            len(claim_chunks(gone, info.id, limit=3, lease_seconds=3600, worker_id="dead-worker"))
            == 3
        )

        table = run(["status"], url_env).stdout
        lines = table.splitlines()
        header = next(_cells(line) for line in lines if "collection" in line)
        row = next(_cells(line) for line in lines if "docs" in line)
        # Leased by a live holder right now; the dead holder's chunks are claimable already.
        assert dict(zip(header, row, strict=True))["leased"] == "5"
        holders = [line for line in table.splitlines() if "leased by" in line]
        assert [line.split(" until ")[0] for line in holders] == [
            "docs: 5 chunks leased by busy-worker (alive)",
            "docs: 3 chunks leased by dead-worker (gone)",
        ]

        proc = run(["sync", "--no-index"], url_env)
        assert proc.stdout.startswith("chunked 0 records, embedded 7 chunks, 0 failed")
        assert proc.stderr.splitlines() == [
            "note: 5 chunks are leased by other processes: busy-worker (alive, 5 chunks of "
            "'docs'); a live holder embeds its chunks"
        ]
