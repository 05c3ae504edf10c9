"""Ingest into PostgreSQL: every format, upsert semantics, bad input, nothing stored lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.errors import IngestError
from embedplat.ingest import read_records


def _records(
    url: str, collection: str = "docs"
) -> dict[str, tuple[str, dict[str, Any], bytes | None, bytes]]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT r.external_id, r.content, r.metadata, r.chunked_hash, r.content_hash "
            "FROM embedplat.records r JOIN embedplat.collections c ON c.id = r.collection_id "
            "WHERE c.name = %s",
            (collection,),
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3], bytes(r[4])) for r in rows}


def _stale_ids(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT external_id FROM embedplat.records "
            "WHERE chunked_hash IS DISTINCT FROM content_hash"
        ).fetchall()
    return {r[0] for r in rows}


def _mark_all_chunked(url: str) -> None:
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("UPDATE embedplat.records SET chunked_hash = content_hash")


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def test_ingest_creates_collection_and_counts(platform: Platform, db_url: str) -> None:
    result = platform.ingest("docs", [{"id": "a", "text": "alpha"}, {"id": 2, "text": "beta"}])
    assert (result.inserted, result.updated, result.unchanged, result.rejected) == (2, 0, 0, 0)
    assert [c.name for c in platform.collections()] == ["docs"]
    assert set(_records(db_url)) == {"a", "2"}


def test_upsert_semantics(platform: Platform, db_url: str) -> None:
    rows = [
        {"id": "same", "text": "unchanged text", "metadata": {"v": 1}},
        {"id": "edit", "text": "old text", "metadata": {"v": 1}},
        {"id": "meta", "text": "kept text", "metadata": {"v": 1}},
    ]
    platform.ingest("docs", rows)
    _mark_all_chunked(db_url)  # as if the sync engine had processed everything
    before = _records(db_url)

    result = platform.ingest(
        "docs",
        [
            {"id": "same", "text": "unchanged text", "metadata": {"v": 1}},
            {"id": "edit", "text": "new text", "metadata": {"v": 1}},
            {"id": "meta", "text": "kept text", "metadata": {"v": 2}},
            {"id": "new", "text": "brand new"},
        ],
    )
    assert (result.inserted, result.updated, result.metadata_updated, result.unchanged) == (
        1,
        1,
        1,
        1,
    )
    after = _records(db_url)
    # Only the changed content (and the new record) need work; metadata-only does not.
    assert _stale_ids(db_url) == {"edit", "new"}
    assert after["meta"][1] == {"v": 2} and after["meta"][3] == before["meta"][3]
    assert after["edit"][3] != before["edit"][3]
    assert after["same"] == before["same"]


def test_unchanged_rows_are_not_rewritten(platform: Platform, db_url: str) -> None:
    platform.ingest("docs", [{"id": "a", "text": "x"}])
    with psycopg.connect(libpq_url(db_url)) as conn:
        xmin_before = conn.execute("SELECT xmin::text FROM embedplat.records").fetchone()
    platform.ingest("docs", [{"id": "a", "text": "x"}])
    with psycopg.connect(libpq_url(db_url)) as conn:
        xmin_after = conn.execute("SELECT xmin::text FROM embedplat.records").fetchone()
    assert xmin_before == xmin_after


def test_last_occurrence_of_an_id_wins(platform: Platform, db_url: str) -> None:
    platform.ingest("docs", [{"id": "a", "text": "first"}, {"id": "a", "text": "second"}])
    assert _records(db_url)["a"][0] == "second"


def test_jsonl_with_several_text_fields_and_metadata_fields(
    platform: Platform, db_url: str, tmp_path: Path
) -> None:
    path = _write(
        tmp_path / "in.jsonl",
        json.dumps({"id": "x", "title": "Title", "body": "Body", "lang": "en", "n": 3}) + "\n",
    )
    items = read_records([path], text_fields=["title", "body"], metadata_fields=["lang", "n"])
    platform.ingest_records("docs", items)
    content, metadata, _, _ = _records(db_url)["x"]
    assert content == "Title\n\nBody"
    assert metadata == {"lang": "en", "n": 3}


def test_csv_and_text_directory(platform: Platform, db_url: str, tmp_path: Path) -> None:
    csv_path = _write(tmp_path / "in.csv", 'id,text,topic\n1,"hello, world",greet\n2,bye,leave\n')
    platform.ingest_records("csvdocs", read_records([csv_path], metadata_fields=["topic"]))
    rows = _records(db_url, "csvdocs")
    assert rows["1"][0] == "hello, world" and rows["1"][1] == {"topic": "greet"}

    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    _write(folder / "a.md", "# Heading\n\nSome text.")
    _write(folder / "sub" / "b.txt", "plain text")
    platform.ingest_records("notes", read_records([folder]))
    assert set(_records(db_url, "notes")) == {"a.md", "sub/b.txt"}


@pytest.mark.parametrize(
    ("payload", "line"),
    [
        (b'{"id": "ok", "text": "fine"}\n{"id": "bad", "text": \n', 2),  # malformed JSON
        (b'{"id": "ok", "text": "fine"}\n{"text": "no id"}\n', 2),  # missing id
        (b'{"id": "ok", "text": "fine"}\n{"id": "x"}\n', 2),  # missing text
        (b'{"id": "ok", "text": "fine"}\n{"id": "x", "text": "caf\xe9"}\n', 2),  # not UTF-8
        (b'{"id": "ok", "text": "fine"}\n{"id": "x", "text": "a\\u0000b"}\n', 2),  # NUL
    ],
)
def test_bad_row_fail_mode_writes_nothing_and_keeps_stored_data(
    platform: Platform, db_url: str, tmp_path: Path, payload: bytes, line: int
) -> None:
    platform.ingest(
        "docs", [{"id": "ok", "text": "stored before"}, {"id": "other", "text": "keep"}]
    )
    before = _records(db_url)
    path = _write(tmp_path / "bad.jsonl", payload)
    with pytest.raises(IngestError) as info:
        platform.ingest_records("docs", read_records([path]), on_error="fail")
    assert info.value.problems[0].source.endswith("bad.jsonl")
    assert info.value.problems[0].line == line
    assert _records(db_url) == before  # the good row of the batch was not written either


def test_bad_rows_skip_mode_writes_good_rows_and_lists_bad(
    platform: Platform, db_url: str, tmp_path: Path
) -> None:
    path = _write(
        tmp_path / "mixed.jsonl",
        b'{"id": "a", "text": "good"}\nnot json\n{"id": "b", "text": "good too"}\n{"id": "c"}\n',
    )
    result = platform.ingest_records("docs", read_records([path]), on_error="skip")
    assert (result.inserted, result.rejected) == (2, 2)
    assert sorted(p.line for p in result.problems) == [2, 4]
    assert set(_records(db_url)) == {"a", "b"}


def test_empty_file_is_reported(platform: Platform, tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.jsonl", b"")
    with pytest.raises(IngestError, match="empty"):
        platform.ingest_records("docs", read_records([path]), on_error="fail")


def test_huge_record_is_rejected_without_losing_others(
    platform: Platform, db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "small", "text": "fine"}) + "\n")
        fh.write('{"id": "huge", "text": "' + "x" * (50 * 1024 * 1024) + '"}\n')
    result = platform.ingest_records("docs", read_records([path]), on_error="skip")
    assert result.inserted == 1 and result.rejected == 1
    assert result.problems[0].line == 2
    assert set(_records(db_url)) == {"small"}
