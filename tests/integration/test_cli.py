"""The CLI as users run it: subprocesses, real model end to end, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.fix_cli import _env, run
from tests.fix_embedders import UNLOADABLE_MODEL

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "sample_corpus.jsonl"


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    env = _env(EMBEDPLAT_DATABASE_URL="postgresql://u:secret@127.0.0.1:9/nowhere")
    proc = run(["status"], env, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the database")
    assert "secret" not in proc.stderr and "Traceback" not in proc.stderr
    debug = run(["--debug", "status"], env, check=False)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_server_without_pgvector_is_explained() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            if conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone():
                pytest.skip("this server has pgvector")
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL without pgvector on 127.0.0.1:5432 to test against")
    proc = run(["init"], _env(EMBEDPLAT_DATABASE_URL=url), check=False)
    assert proc.returncode == 1
    assert "pgvector is not installed" in proc.stderr and "Traceback" not in proc.stderr


def test_uninitialised_database_says_run_init(empty_db_url: str) -> None:
    proc = run(["status"], _env(EMBEDPLAT_DATABASE_URL=empty_db_url), check=False)
    assert proc.returncode == 1 and "embedplat init" in proc.stderr


def test_collections_and_ingest_json(url_env: dict[str, str], tmp_path: Path) -> None:
    run(["collection", "create", "c1", "--model", "test-hash-16", "--chunk-tokens", "50"], url_env)
    dup = run(["collection", "create", "c1"], url_env, check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    bad = run(
        ["collection", "create", "c2", "--chunk-tokens", "10", "--chunk-overlap", "10"],
        url_env,
        check=False,
    )
    assert bad.returncode == 1 and "--chunk-overlap" in bad.stderr
    listing = json.loads(run(["collection", "list", "--json"], url_env).stdout)
    assert [c["name"] for c in listing["collections"]] == ["c1"]

    data = tmp_path / "rows.jsonl"
    data.write_text('{"id": "a", "text": "one"}\n{"id": "b"}\n{"id": "c", "text": "three"}\n')
    failed = run(["ingest", "c1", str(data), "--json"], url_env, check=False)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["problems"][0]["line"] == 2
    skipped = json.loads(
        run(["ingest", "c1", str(data), "--on-error", "skip", "--json"], url_env).stdout
    )
    assert (skipped["inserted"], skipped["rejected"]) == (2, 1)
    stdin = run(["ingest", "c1", "-", "--json"], url_env, stdin='{"id": "d", "text": "four"}\n')
    assert json.loads(stdin.stdout)["inserted"] == 1

    status = json.loads(run(["status", "--json"], url_env).stdout)
    (c1,) = status["collections"]
    assert {
        k: c1[k] for k in ("name", "model", "records", "chunks", "embedded", "stale", "failed")
    } == {
        "name": "c1",
        "model": "test-hash-16",
        "records": 3,
        "chunks": 0,
        "embedded": 0,
        "stale": 3,
        "failed": 0,
    }
    refused = run(["collection", "drop", "c1"], url_env, check=False)
    assert refused.returncode == 2  # a usage error: the confirmation is missing
    assert refused.stderr.splitlines() == [
        "error: dropping 'c1' deletes all its records and embeddings; repeat with --yes to confirm",
        "Try 'embedplat collection drop --help' for help.",
    ]
    run(["collection", "drop", "c1", "--yes"], url_env)
    assert json.loads(run(["status", "--json"], url_env).stdout) == {"collections": []}


@pytest.mark.model
def test_whole_job_on_the_embedded_default_with_the_real_model(tmp_path: Path) -> None:
    env = _env(EMBEDPLAT_HOME=str(tmp_path / "home"))
    try:
        run(["init"], env)
        run(["init"], env)  # idempotent
        ingest = json.loads(
            run(
                [
                    "ingest",
                    "docs",
                    str(SAMPLE),
                    "--text-field",
                    "title",
                    "--text-field",
                    "text",
                    "--json",
                ],
                env,
            ).stdout
        )
        assert ingest["inserted"] == 40
        report = json.loads(run(["sync", "--json"], env).stdout)
        assert report["records_chunked"] == 40 and report["chunks_embedded"] > 0
        assert report["chunks_failed"] == 0 and report["indexes_built"]

        queries = tmp_path / "q.jsonl"
        queries.write_text(
            json.dumps({"id": "tomato", "text": "how do I keep tomatoes healthy"})
            + "\n"
            + json.dumps({"text": "distance light travels in a year"})
            + "\n"
        )
        lines = [
            json.loads(line)
            for line in run(
                ["search", "docs", "--queries", str(queries), "-k", "3", "--json"], env
            ).stdout.splitlines()
        ]
        assert [entry["query_id"] for entry in lines] == ["tomato", 1]
        assert {h["id"] for h in lines[0]["hits"][:2]} == {"garden-001", "garden-001-copy"}
        assert lines[1]["hits"][0]["id"] in {"astro-003", "astro-003-dup"}
        filtered = json.loads(
            run(
                [
                    "search",
                    "docs",
                    "tomato",
                    "-k",
                    "3",
                    "--filter",
                    '{"topic": "cooking"}',
                    "--json",
                ],
                env,
            ).stdout
        )
        assert filtered["hits"][0]["id"] == "cook-001"
        assert all(h["metadata"]["topic"] == "cooking" for h in filtered["hits"])

        status = json.loads(run(["status", "--json"], env).stdout)["collections"][0]
        assert status["stale"] == 0 and status["embedded"] == status["chunks"] > 0

        # Unchanged re-ingest and sync: no work at all.
        again = json.loads(
            run(
                [
                    "ingest",
                    "docs",
                    str(SAMPLE),
                    "--text-field",
                    "title",
                    "--text-field",
                    "text",
                    "--json",
                ],
                env,
            ).stdout
        )
        assert again["unchanged"] == 40
        assert json.loads(run(["sync", "--json"], env).stdout)["chunks_embedded"] == 0

        url = run(["db", "url"], env).stdout.strip()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM embedplat.records").fetchone() == (40,)
        db_status = json.loads(run(["db", "status", "--json"], env).stdout)
        assert db_status["running"] is True
    finally:
        run(["db", "stop"], env, check=False)
    assert json.loads(run(["db", "status", "--json"], env).stdout)["running"] is False


def test_ingest_a_folder_lists_what_it_skips(url_env: dict[str, str], tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    (notes / "guides").mkdir(parents=True)
    (notes / ".git").mkdir()
    (notes / "a.md").write_text("# Alpha\n\nThe first note.\n")
    (notes / "guides" / "b.rst").write_text("Bravo\n=====\n\nThe second note.\n")
    (notes / "c.txt").write_text("Charlie, the third note.\n")
    (notes / "photo.png").write_bytes(b"\x89PNG")
    (notes / ".draft.md").write_text("# not yet\n")
    (notes / ".git" / "HEAD.md").write_text("# hidden folder\n")

    result = json.loads(run(["ingest", "notes", str(notes), "--json"], url_env).stdout)
    assert (result["inserted"], result["rejected"]) == (3, 0)
    assert result["skipped"] == [
        {"path": str(notes / ".draft.md"), "reason": "hidden file"},
        {"path": str(notes / ".git"), "reason": "hidden folder"},
        {
            "path": str(notes / "photo.png"),
            "reason": "not a text file (reads .txt, .md, .markdown, .rst)",
        },
    ]
    exported = [json.loads(line) for line in run(["export", "notes"], url_env).stdout.splitlines()]
    assert {r["id"]: r["metadata"] for r in exported} == {
        "a.md": {"path": "a.md", "title": "Alpha"},
        "c.txt": {"path": "c.txt", "title": "Charlie, the third note."},
        "guides/b.rst": {"path": "guides/b.rst", "title": "Bravo"},
    }

    text = run(["ingest", "notes", str(notes)], url_env)
    assert text.stdout.strip() == (
        "notes: 0 inserted, 0 updated, 0 metadata-only, 3 unchanged, 0 rejected, 3 files skipped"
    )
    assert text.stderr.splitlines() == [
        f"  skipped {notes / '.draft.md'}: hidden file",
        f"  skipped {notes / '.git'}: hidden folder",
        f"  skipped {notes / 'photo.png'}: not a text file (reads .txt, .md, .markdown, .rst)",
    ]


def test_sync_of_every_collection_exits_1_naming_the_one_that_failed(
    url_env: dict[str, str],
) -> None:
    # Accepted at create (a known model name), failing at load: every sync of it fails.
    run(["collection", "create", "broken", "--model", UNLOADABLE_MODEL], url_env)
    run(["ingest", "broken", "-"], url_env, stdin='{"id": "a", "text": "one"}\n')
    proc = run(["sync", "--json"], url_env, check=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert [f["collection"] for f in report["failed_collections"]] == ["broken"]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: sync failed for 1 collection(s): 'broken': ")
    assert "Traceback" not in proc.stderr
