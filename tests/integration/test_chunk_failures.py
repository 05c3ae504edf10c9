"""A record whose chunking keeps failing, or whose text is over the size limit (possible only
through a plain SQL write), is parked in a visible state; the rest of the batch goes on and the
parked record keeps its old chunks and vectors."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from embedplat.api import Platform
from embedplat.chunking import TokenCounter
from embedplat.db.connection import libpq_url
from embedplat.ingest import MAX_RECORD_BYTES
from embedplat.sync import SyncOptions, _batch_by_size, sync
from tests.fix_embedders import HashEmbedder, RegexTokenCounter


class _PoisonCounter(RegexTokenCounter):
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if any("POISON" in t for t in texts):
            raise ValueError("tokenizer crashed")
        return super().count_tokens(texts)


class _PoisonEmbedder(HashEmbedder):
    def token_counter(self) -> TokenCounter:
        return _PoisonCounter()


def _sync(url: str, max_attempts: int = 3):
    return sync(
        lambda: psycopg.connect(libpq_url(url)),
        lambda name: _PoisonEmbedder(64),
        "docs",
        SyncOptions(max_attempts=max_attempts, build_index=False),
    )


def _record(platform: Platform, external_id: str) -> tuple[int, str | None, int]:
    with platform.connection() as conn:
        row = conn.execute(
            "SELECT chunk_attempts, chunk_error, "
            "(SELECT count(*) FROM embedplat.chunks ch WHERE ch.record_id = r.id) "
            "FROM embedplat.records r WHERE external_id = %s",
            (external_id,),
        ).fetchone()
    assert row is not None
    return int(row[0]), row[1], int(row[2])


def test_failing_record_is_parked_after_max_attempts(platform: Platform, db_url: str) -> None:
    platform.create_collection("docs", model="test-hash-64")
    platform.ingest(
        "docs",
        [
            {"id": "good-1", "text": "apples and pears"},
            {"id": "bad", "text": "a POISON pill"},
            {"id": "good-2", "text": "cherries and plums"},
        ],
    )
    report = _sync(db_url, max_attempts=3)
    assert report.records_chunked == 2 and report.chunks_embedded == 2
    assert report.records_failed == 3 and report.records_parked == 1  # 3 attempts, then parked
    attempts, error, chunks = _record(platform, "bad")
    assert attempts == 3 and error == "ValueError: tokenizer crashed" and chunks == 0
    with platform.connection() as conn:
        failed = conn.execute(
            "SELECT kind, record_id, last_error FROM embedplat.failed_work"
        ).fetchall()
        stale = conn.execute("SELECT count(*) FROM embedplat.stale_records").fetchone()
    assert failed == [("record", "bad", "ValueError: tokenizer crashed")]
    assert stale == (0,)
    status = {s.name: s for s in platform.status()}["docs"]
    assert status.failed == 1 and status.stale == 0
    # the next sync does not try it again ...
    assert _sync(db_url).records_failed == 0
    # ... until its content changes
    platform.ingest("docs", [{"id": "bad", "text": "a harmless pill"}])
    report = _sync(db_url)
    assert report.records_chunked == 1 and report.records_failed == 0
    assert _record(platform, "bad") == (0, None, 1)


def test_oversized_record_from_sql_is_parked_at_once(platform: Platform, db_url: str) -> None:
    platform.create_collection("docs", model="test-hash-64")
    platform.ingest("docs", [{"id": "small", "text": "a few words"}])
    assert _sync(db_url).chunks_embedded == 1
    with platform.connection() as conn:
        # a plain SQL writer is not held to ingest's limit; grow an embedded record past it
        conn.execute(
            "UPDATE embedplat.records SET content = repeat('word ', %s) WHERE external_id = 'small'",
            (MAX_RECORD_BYTES // 5 + 1,),
        )
        conn.execute(
            "INSERT INTO embedplat.records (collection_id, external_id, content) "
            "SELECT id, 'fine', 'short text' FROM embedplat.collections WHERE name = 'docs'"
        )
    report = _sync(db_url, max_attempts=5)
    assert report.records_parked == 1 and report.records_failed == 1  # no retries
    assert report.records_chunked == 1  # 'fine'
    attempts, error, chunks = _record(platform, "small")
    assert attempts == 1 and chunks == 1  # its old chunk (and vector) stay
    assert error is not None and f"at most {MAX_RECORD_BYTES:,} bytes" in error


def test_batches_are_bounded_by_size() -> None:
    assert _batch_by_size([(1, 10), (2, 10), (3, 10)], 25) == [1, 2]
    assert _batch_by_size([(1, 100), (2, 1)], 25) == [1]  # a huge record goes alone
    assert _batch_by_size([(1, 1), (2, 100)], 25) == [1]  # ... in a transaction of its own
    assert _batch_by_size([], 25) == []


class _ZeroEmbedder(HashEmbedder):
    """Returns a zero vector for texts that say ZERO and NaNs for texts that say NAN."""

    def embed(self, texts):
        vectors = super().embed(texts)
        for i, text in enumerate(texts):
            if "ZERO" in text:
                vectors[i] = 0.0
            if "NAN" in text:
                vectors[i] = float("nan")
        return vectors


def test_zero_or_nan_vectors_are_item_failures(platform: Platform, db_url: str) -> None:
    platform.create_collection("docs", model="test-hash-64")
    platform.ingest(
        "docs",
        [
            {"id": "good", "text": "plain words"},
            {"id": "zero", "text": "ZERO words"},
            {"id": "nan", "text": "NAN words"},
        ],
    )
    report = sync(
        lambda: psycopg.connect(libpq_url(db_url)),
        lambda name: _ZeroEmbedder(64),
        "docs",
        SyncOptions(max_attempts=1, build_index=False),
    )
    assert report.chunks_embedded == 1 and report.chunks_failed == 2 and report.chunks_parked == 2
    with platform.connection() as conn:
        stored = conn.execute(
            "SELECT r.external_id FROM embedplat.embeddings e "
            "JOIN embedplat.records r ON r.id = e.record_id"
        ).fetchall()
        failed = conn.execute(
            "SELECT record_id, last_error FROM embedplat.failed_work ORDER BY record_id"
        ).fetchall()
    assert stored == [("good",)]
    assert [f[0] for f in failed] == ["nan", "zero"]
    assert all("vector of zeros or non-finite numbers" in f[1] for f in failed)
