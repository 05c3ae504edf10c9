"""Export: records and chunks, with vectors, as JSON Lines and Parquet; streaming through a
server-side cursor; atomic files; hostile names; the CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.errors import CollectionNotFoundError, InvalidInputError
from embedplat.export import export_rows
from tests.fix_cli import _env, run
from tests.fix_embedders import HashEmbedder

from .analytics_helpers import stored_chunk_vectors
from .search_helpers import hash_sync

HASH = "test-hash-64"
NAME = "docs 'ünï' ; %s"
ROWS: list[dict[str, Any]] = [
    {"id": "a", "text": "apple banana cherry", "metadata": {"lang": "en", "n": 1}},
    {"id": "b", "text": "Grüße aus Köln — 名前 🚀", "metadata": {"lang": "de"}},
    {
        "id": "long",
        "text": "first paragraph about apples and pears\n\nsecond paragraph about harbors",
        "metadata": {},
    },
]


@pytest.fixture
def docs(platform: Platform, db_url: str) -> Platform:
    platform.create_collection(NAME, model=HASH, chunk_tokens=8, chunk_overlap=0)
    platform.ingest(NAME, ROWS)
    hash_sync(db_url, NAME)
    return platform


def _jsonl(platform: Platform, **options: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    n = platform.export(NAME, out, **options)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert n == len(lines)
    return lines


def test_records_as_json_lines(docs: Platform) -> None:
    lines = _jsonl(docs)
    assert [(r["id"], r["text"], r["metadata"]) for r in lines] == [
        (r["id"], r["text"], r["metadata"]) for r in ROWS
    ]
    assert set(lines[0]) == {"id", "text", "metadata", "content_hash", "created_at", "updated_at"}
    assert lines[1]["content_hash"] == hashlib.sha256(ROWS[1]["text"].encode()).hexdigest()


def test_records_with_vectors_are_the_stored_chunk_vectors(docs: Platform, db_url: str) -> None:
    stored = stored_chunk_vectors(db_url, NAME)
    lines = _jsonl(docs, vectors=True)
    assert len(lines[2]["vectors"]) == 2  # "long" has two chunks
    for line in lines:
        got = np.asarray(line["vectors"], dtype=np.float32)
        assert np.array_equal(got, np.stack(stored[line["id"]]).astype(np.float32))


def test_chunks_with_vectors(docs: Platform, db_url: str) -> None:
    lines = _jsonl(docs, chunks=True, vectors=True)
    assert [(c["id"], c["chunk"]) for c in lines] == [("a", 0), ("b", 0), ("long", 0), ("long", 1)]
    with psycopg.connect(libpq_url(db_url)) as conn:
        texts = [
            r[0]
            for r in conn.execute(
                "SELECT content FROM embedplat.chunks ORDER BY record_id, ordinal"
            ).fetchall()
        ]
    assert [c["text"] for c in lines] == texts
    expected = HashEmbedder(64).embed(texts)
    assert np.allclose(np.asarray([c["vector"] for c in lines]), expected, atol=1e-7)
    first = lines[2]
    source = ROWS[2]["text"]
    assert source[first["char_start"] : first["char_end"]].strip() == first["text"].strip()
    assert first["tokens"] > 0 and first["metadata"] == {}


def test_before_sync_vectors_are_null(platform: Platform) -> None:
    platform.create_collection("raw", model=HASH)
    platform.ingest("raw", ROWS[:2])
    out = io.StringIO()
    assert platform.export("raw", out, vectors=True) == 2
    assert [json.loads(line)["vectors"] for line in out.getvalue().splitlines()] == [None, None]
    assert platform.export("raw", io.StringIO(), chunks=True) == 0  # not chunked yet


def test_rows_stream_from_a_server_side_cursor(docs: Platform) -> None:
    with docs.connection() as conn:
        rows = export_rows(conn, NAME, chunks=True, batch_size=1)
        first = next(rows)
        cursors = conn.execute("SELECT name FROM pg_cursors").fetchall()
        rest = list(rows)
    assert ("embedplat_export",) in cursors
    assert first["id"] == "a" and len(rest) == 3


def test_parquet(docs: Platform, db_url: str, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "records.parquet"
    assert docs.export(NAME, path, format="parquet", vectors=True) == 3
    table = pq.read_table(path)
    assert table.column_names == [
        "id",
        "text",
        "metadata",
        "content_hash",
        "created_at",
        "updated_at",
        "vectors",
    ]
    data = table.to_pylist()
    assert [r["text"] for r in data] == [r["text"] for r in ROWS]
    assert [json.loads(r["metadata"]) for r in data] == [r["metadata"] for r in ROWS]
    stored = stored_chunk_vectors(db_url, NAME)
    assert np.allclose(np.asarray(data[2]["vectors"]), np.stack(stored["long"]))
    chunks_path = tmp_path / "chunks.parquet"
    assert docs.export(NAME, chunks_path, format="parquet", chunks=True, vectors=True) == 4
    chunks = pq.read_table(chunks_path)
    assert chunks.schema.field("vector").type.value_type.bit_width == 32
    assert chunks.num_rows == 4 and chunks.column("chunk").to_pylist() == [0, 0, 0, 1]
    assert set(tmp_path.iterdir()) == {path, chunks_path}  # no temporary files left behind


def test_errors_leave_no_file(docs: Platform, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    with pytest.raises(CollectionNotFoundError):
        docs.export("nope'; --", target)
    with pytest.raises(InvalidInputError, match="Parquet export needs an output file"):
        docs.export(NAME, io.StringIO(), format="parquet")
    with pytest.raises(InvalidInputError, match="format must be"):
        docs.export(NAME, target, format="csv")  # type: ignore[arg-type]
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(InvalidInputError, match="it is a folder"):
        docs.export(NAME, folder)
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []


def test_cli_export(docs: Platform, db_url: str, tmp_path: Path) -> None:
    env = _env(EMBEDPLAT_DATABASE_URL=db_url, EMBEDPLAT_HOME=str(tmp_path / "home"))
    stdout = run(["export", NAME], env).stdout
    assert [json.loads(line)["id"] for line in stdout.splitlines()] == ["a", "b", "long"]
    assert "名前 🚀" in stdout  # UTF-8, not \\u escapes
    target = tmp_path / "chunks.jsonl"
    proc = run(["export", NAME, "--chunks", "--vectors", "--output", str(target)], env)
    assert proc.stdout == "" and "exported 4 chunks" in proc.stderr
    assert len(json.loads(target.read_text().splitlines()[0])["vector"]) == 64
    bad = run(["export", NAME, "--format", "parquet"], env, check=False)
    assert (
        bad.returncode == 1 and bad.stderr.strip() == "error: --format parquet needs --output PATH"
    )
    if importlib.util.find_spec("pyarrow") is not None:
        out = tmp_path / "r.parquet"
        run(["export", NAME, "--format", "parquet", "-o", str(out)], env)
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.column("id").to_pylist() == ["a", "b", "long"]
        assert table.num_rows == 3
