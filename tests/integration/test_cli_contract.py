"""The CLI's contracts, for every command of the Typer app (a new command is covered by itself).

Exit rule (docs/cli.md): 1 = failure with one ``error:`` line; 2 = usage error with one
``error:`` line and a hint to ``--help``; a closed stdout ends quietly with 141.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedplat.api import Platform
from embedplat.cli.app import EXIT_PIPE_CLOSED, main
from embedplat.cli.reference import commands, update_document
from embedplat.indexes import IndexReport
from embedplat.search import HybridHit, SearchHit
from embedplat.store import IngestResult
from embedplat.sync import SyncReport
from tests.fix_cli import _env, documented_keys, run

from .search_helpers import hash_collection, word_rows

REPO = Path(__file__).resolve().parents[2]
# (command words, a value "x" for each of its arguments) for every command of the app.
COMMANDS = [
    (
        ctx.command_path.split()[1:],
        ["x" for p in command.params if p.param_type_name == "argument"],
    )
    for ctx, command in commands()
]
IDS = [" ".join(words) for words, _ in COMMANDS]


def _lines(text: str) -> list[str]:
    return text.strip().splitlines()


def test_the_command_list_is_complete() -> None:
    # The parametrised tests below cover what this list holds: the app's commands, groups' too.
    assert {"init", "ingest", "sync", "search", "worker", "db url", "collection drop"} <= set(IDS)


@pytest.mark.parametrize(("words", "needed"), COMMANDS, ids=IDS)
def test_usage_error_is_one_error_line_and_a_help_hint(words: list[str], needed: list[str]) -> None:
    proc = run([*words, *needed, "--zzz"], _env(), check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert _lines(proc.stderr) == [
        "error: No such option: --zzz",
        f"Try 'embedplat {' '.join(words)} --help' for help.",
    ]


@pytest.mark.parametrize(("words", "needed"), COMMANDS, ids=IDS)
def test_failure_is_one_error_line_and_status_1(
    words: list[str], needed: list[str], tmp_path: Path
) -> None:
    # A bad setting fails every command, before any database or model is touched.
    env = _env(EMBEDPLAT_DEVICE="tpu", EMBEDPLAT_HOME=str(tmp_path / "home"))
    confirm = ["--yes"] if words == ["collection", "drop"] else []
    proc = subprocess.run(
        [sys.executable, "-m", "embedplat.cli", *words, *needed, *confirm],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    (line,) = _lines(proc.stderr)
    assert line.startswith("error: ") and "Traceback" not in proc.stderr
    if words != ["ingest"]:  # ingest checks its paths first: "x: no such file or directory"
        assert line.startswith("error: EMBEDPLAT_DEVICE must be cpu, cuda, cuda:N"), line


@pytest.mark.parametrize(("words", "needed"), COMMANDS, ids=IDS)
def test_help_lists_every_option_and_no_bool_type(
    words: list[str], needed: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # In process: --help touches nothing but the Click objects (the subprocess tests above
    # and below cover the entry point itself).
    with pytest.raises(SystemExit) as exit_info:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "<bool>" not in out
    ctx, command = next((c, cmd) for c, cmd in commands() if c.command_path.split()[1:] == words)
    for param in command.params:
        for opt in param.opts if param.param_type_name == "option" else ():
            assert opt in out, f"{ctx.command_path} --help does not show {opt}"


@pytest.mark.parametrize(("words", "needed"), COMMANDS, ids=IDS)
def test_closed_stdout_ends_quietly(words: list[str], needed: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the command writes anything: every write fails
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "embedplat.cli", *words, "--help"],
            env=_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (EXIT_PIPE_CLOSED, "")


def test_a_group_without_its_command_shows_its_help_as_a_usage_error() -> None:
    for words in ([], ["db"], ["collection"]):
        proc = run(words, _env(), check=False)
        assert proc.returncode == 2 and proc.stdout == ""
        assert (
            _lines(proc.stderr)[0]
            == f"Usage: {' '.join(['embedplat', *words])} [OPTIONS] COMMAND [ARGS]..."
        )


def test_export_into_a_closed_pipe_ends_quietly(
    platform: Platform, url_env: dict[str, str]
) -> None:
    # Enough rows to fill the pipe's buffer, so export is still writing when `head` is gone.
    platform.ingest("docs", [{"id": f"r{i}", "text": "word " * 100} for i in range(2000)])
    proc = subprocess.run(
        [
            "bash",
            "-c",
            f'"{sys.executable}" -m embedplat.cli export docs | head -1; '
            'echo "status=${PIPESTATUS[0]}" >&2',
        ],
        env=url_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert json.loads(proc.stdout)["id"] == "r0"
    assert _lines(proc.stderr) == [f"status={EXIT_PIPE_CLOSED}"]


def test_usage_and_failure_in_one_command(url_env: dict[str, str]) -> None:
    missing = run(["search"], url_env, check=False)
    assert missing.returncode == 2
    assert _lines(missing.stderr) == [
        "error: Missing argument 'COLLECTION'.",
        "Try 'embedplat search --help' for help.",
    ]
    bad_type = run(["search", "docs", "x", "-k", "many"], url_env, check=False)
    assert bad_type.returncode == 2 and _lines(bad_type.stderr)[0].startswith(
        "error: Invalid value for '-k'"
    )
    refused = run(["search", "docs", "x", "-k", "0"], url_env, check=False)
    # the library's one check of k (SearchOptions), before any model loads
    assert refused.returncode == 1 and _lines(refused.stderr) == [
        "error: k must be an integer between 1 and 10000, got 0"
    ]
    debug = run(["--debug", "search", "nope", "x"], url_env, check=False)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_index_refuses_more_ivfflat_lists_than_vectors(
    platform: Platform, db_url: str, url_env: dict[str, str]
) -> None:
    hash_collection(platform, db_url, word_rows(44, seed=5, metadata=lambda i, rng: {}))
    (row,) = platform.status()
    vectors = row.embedded
    assert vectors >= 44
    proc = run(["index", "docs", "--method", "ivfflat", "--lists", "300"], url_env, check=False)
    assert proc.returncode == 1
    assert _lines(proc.stderr) == [
        f"error: --lists 300 is more than the {vectors:,} vectors of 'docs': IVFFlat would leave "
        f"lists empty and lose recall; use at most {vectors:,} (pgvector suggests rows / 1000, "
        "the default when --lists is left out)"
    ]
    built = json.loads(
        run(
            ["index", "docs", "--method", "ivfflat", "--lists", str(vectors), "--json"], url_env
        ).stdout
    )
    assert built["built"] and built["options"]["lists"] == vectors


def test_sync_reconcile_prints_a_line_and_json(url_env: dict[str, str]) -> None:
    run(["collection", "create", "empty"], url_env)
    text = run(["sync", "--reconcile", "--no-index"], url_env).stdout
    assert _lines(text)[0] == "reconcile: no drift found"
    assert "{" not in text
    report = json.loads(run(["sync", "--reconcile", "--no-index", "--json"], url_env).stdout)
    drift = report["reconcile"]
    assert "records_rechunked" in drift and set(drift.values()) == {0}


def test_docs_cli_md_is_current() -> None:
    path = REPO / "docs" / "cli.md"
    text = path.read_text(encoding="utf-8")
    assert update_document(text) == text, (
        "docs/cli.md is out of date: run python -m embedplat.cli.reference --write docs/cli.md"
    )


def test_documented_json_keys_match_the_output(platform: Platform) -> None:
    platform.ingest("docs", [{"id": "a", "text": "one"}])
    (status,) = platform.status()
    assert documented_keys("status --json") == set(status.to_json())
    assert documented_keys("sync --json") == set(SyncReport().to_json()) | {
        "requeued",
        "reconcile",
    }
    assert documented_keys("ingest --json") == set(IngestResult().to_json()) | {"skipped"}
    index = IndexReport(collection="docs", method="hnsw", options={})
    assert documented_keys("index --json") == set(index.to_json())
    hit = SearchHit(id="a", score=0.5, chunk="one", metadata={})
    hybrid = HybridHit(id="a", score=0.5, chunk="one", metadata={})
    assert documented_keys("search --json`, `similar --json") == set(hit.to_json()) | set(
        hybrid.to_json()
    )
