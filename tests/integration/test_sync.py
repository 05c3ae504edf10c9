"""The sync engine against real PostgreSQL: incremental, concurrent, crash-safe, CAS, failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.embedders import Embedder
from embedplat.sync import (
    ClaimedChunk,
    SyncOptions,
    bind_model,
    chunk_stale_records,
    claim_chunks,
    store_vectors,
    sync,
)
from tests.fix_embedders import REPO_ROOT, HashEmbedder, plugin_env
from tests.waiting import wait_for

from .sync_helpers import counts, logging_embedder, read_log

MODEL = "test-hash-64"


def _sync_processes(
    url: str, logs: list[Path], delay_s: float, lease_s: int
) -> list[subprocess.Popen[bytes]]:
    """One ``embedplat.sync`` per log, each in its own process, started together once all are
    up (tests/integration/sync_helpers.py waits for the word)."""
    helper = [sys.executable, "-m", "tests.integration.sync_helpers", url, "docs"]
    procs = [
        subprocess.Popen(
            [*helper, str(log), str(delay_s), str(lease_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(REPO_ROOT),
            env={**os.environ, **plugin_env()},
        )
        for log in logs
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()  # left open: communicate() closes it
    return procs


def _paragraphs(record: int, n: int, words: int = 30) -> str:
    return "\n\n".join(
        f"Record {record} paragraph {p} " + " ".join(f"w{record}x{p}y{i}" for i in range(words))
        for p in range(n)
    )


def _run_sync(url: str, embedder: Embedder, collection: str = "docs", **options: object):
    return sync(
        lambda: psycopg.connect(libpq_url(url)),
        lambda name: embedder,
        collection,
        SyncOptions(**options),  # type: ignore[arg-type]
    )


@pytest.fixture
def docs(platform: Platform) -> Platform:
    platform.create_collection("docs", model=MODEL, chunk_tokens=40, chunk_overlap=5)
    return platform


def test_full_sync_embeds_every_chunk_and_builds_index(docs: Platform, db_url: str) -> None:
    docs.ingest("docs", [{"id": f"r{i}", "text": _paragraphs(i, 4)} for i in range(10)])
    embedder = HashEmbedder(64)
    report = _run_sync(db_url, embedder)
    c = counts(db_url)
    assert c["chunks"] > 10 and c["embeddings"] == c["chunks"]
    assert c["queue"] == 0 and c["stale_records"] == 0
    assert report.records_chunked == 10 and report.chunks_embedded == c["chunks"]
    assert report.indexes_built == ["ix_embeddings_ann_c1_m1"]
    status = docs.status()[0]
    assert (status.stale, status.failed, status.embedded) == (0, 0, c["chunks"])
    # No-op sync: nothing to chunk, nothing to embed.
    again = _run_sync(db_url, embedder)
    assert (again.records_chunked, again.chunks_embedded) == (0, 0)


def test_editing_one_paragraph_reembeds_only_its_chunks(docs: Platform, db_url: str) -> None:
    texts = {f"r{i}": _paragraphs(i, 8) for i in range(5)}
    docs.ingest("docs", [{"id": k, "text": v} for k, v in texts.items()])
    _run_sync(db_url, HashEmbedder(64))
    with psycopg.connect(libpq_url(db_url)) as conn:
        before = dict(conn.execute("SELECT text_hash, id FROM embedplat.chunks").fetchall())

    edited = texts["r2"].replace("Record 2 paragraph 5", "Record 2 paragraph five, rewritten")
    docs.ingest(
        "docs",
        [{"id": k, "text": edited if k == "r2" else v} for k, v in texts.items()]
        + [{"id": "r0", "text": texts["r0"], "metadata": {"only": "metadata"}}],
    )
    embedder = HashEmbedder(64)
    report = _run_sync(db_url, embedder)
    assert report.records_chunked == 1
    assert 1 <= report.chunks_embedded <= 2
    with psycopg.connect(libpq_url(db_url)) as conn:
        after = dict(conn.execute("SELECT text_hash, id FROM embedplat.chunks").fetchall())
    kept = set(before) & set(after)
    assert all(before[h] == after[h] for h in kept)  # unchanged text keeps its row id
    assert len(set(after) - set(before)) == report.chunks_embedded
    assert counts(db_url)["embeddings"] == counts(db_url)["chunks"]


def test_deleting_a_record_removes_its_chunks_and_vectors(docs: Platform, db_url: str) -> None:
    docs.ingest("docs", [{"id": "a", "text": _paragraphs(1, 3)}, {"id": "b", "text": "short"}])
    _run_sync(db_url, HashEmbedder(64))
    with psycopg.connect(libpq_url(db_url)) as conn:
        conn.execute("DELETE FROM embedplat.records WHERE external_id = 'a'")
    c = counts(db_url)
    assert c["chunks"] == 1 and c["embeddings"] == 1


def test_concurrent_sync_processes_embed_every_chunk_exactly_once(
    docs: Platform, db_url: str, tmp_path: Path
) -> None:
    docs.ingest("docs", [{"id": f"r{i}", "text": _paragraphs(i, 3, 20)} for i in range(40)])
    logs = [tmp_path / f"log{i}" for i in range(3)]
    # 0.2 s per model call: a process that starts claiming a little late still finds work.
    procs = _sync_processes(db_url, logs, 0.2, 300)
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    embedded = [text for log in logs for text in read_log(log)]
    c = counts(db_url)
    assert c["embeddings"] == c["chunks"] and c["queue"] == 0 and c["stale_records"] == 0
    assert len(embedded) == c["chunks"]  # each chunk went through the model once...
    assert len(set(embedded)) == len(embedded)  # ...and no text twice
    assert sum(1 for log in logs if read_log(log)) >= 2  # the work was actually shared


def test_expired_lease_of_a_live_holder_is_taken_over(
    docs: Platform, db_url: str, tmp_path: Path
) -> None:
    # A holder that is alive but stuck (here: asleep inside its model call) keeps its claim
    # until the lease runs out; then other processes take the work over. (A holder that died
    # frees its claim at once: tests/integration/test_leases.py.)
    docs.ingest("docs", [{"id": f"r{i}", "text": _paragraphs(i, 2, 10)} for i in range(12)])
    log = tmp_path / "victim.log"
    # The victim sleeps 300 s inside its first model call, holding a lease of an hour: only
    # the expiry this test makes below can free its claim, however slow the machine is.
    (victim,) = _sync_processes(db_url, [log], 300, 3600)
    try:
        leased = wait_for(lambda: _leased(db_url), 120, "the victim to claim work")
        rescuer = logging_embedder(tmp_path / "rescuer.log")
        first = _run_sync(db_url, rescuer, build_index=False, lease_seconds=3)
        # The leased chunks are invisible while the lease lasts...
        assert counts(db_url)["queue"] == leased
        assert first.chunks_embedded == counts(db_url)["chunks"] - leased
        # ...and claimable once it has run out: move its end into the past, as the clock would.
        with psycopg.connect(libpq_url(db_url)) as conn:
            expired = conn.execute(
                "UPDATE embedplat.embedding_queue SET leased_until = now() - interval '1 second' "
                "WHERE leased_until > now()"
            ).rowcount
        assert expired == leased
        second = _run_sync(db_url, rescuer, build_index=False, lease_seconds=3)
        assert victim.poll() is None, "the victim was alive all along"
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    assert read_log(log) == []  # the victim's model call never returned
    c = counts(db_url)
    assert c["queue"] == 0 and c["embeddings"] == c["chunks"]
    assert first.chunks_embedded + second.chunks_embedded == c["chunks"]
    assert second.chunks_embedded == leased
    assert sorted(read_log(tmp_path / "rescuer.log")) == sorted(_chunk_texts(db_url))


def _chunk_texts(url: str) -> list[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        return [str(r[0]) for r in conn.execute("SELECT content FROM embedplat.chunks")]


def _leased(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM embedplat.embedding_queue WHERE leased_by IS NOT NULL"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_compare_and_set_discards_vectors_of_changed_text(docs: Platform, db_url: str) -> None:
    docs.ingest("docs", [{"id": "a", "text": "the original text"}])
    embedder = HashEmbedder(64)
    collection = docs.collection("docs")
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        chunk_stale_records(conn, collection, embedder, limit=10)
        claimed = claim_chunks(conn, collection.id, limit=10, lease_seconds=60, worker_id="w1")
        assert len(claimed) == 1
        vectors = embedder.embed([c.text for c in claimed])
        # The record changes while "w1" is embedding.
        docs.ingest("docs", [{"id": "a", "text": "the new text"}])
        chunk_stale_records(conn, collection, embedder, limit=10)
        from embedplat.sync import bind_model

        model_id = bind_model(conn, collection, embedder)
        assert store_vectors(conn, model_id, "w1", claimed, vectors) == 0
    c = counts(db_url)
    assert c["embeddings"] == 0 and c["queue"] == 1  # new text still pending
    _run_sync(db_url, embedder)
    with psycopg.connect(libpq_url(db_url)) as conn:
        text = conn.execute(
            "SELECT ch.content FROM embedplat.embeddings e JOIN embedplat.chunks ch "
            "ON ch.id = e.chunk_id AND ch.text_hash = e.text_hash"
        ).fetchall()
    assert text == [("the new text",)]


def _claim_all(docs: Platform, db_url: str, texts: list[str]) -> tuple[int, list[ClaimedChunk]]:
    """Ingest one record per text, chunk them, bind the model: (model id, every chunk claimed
    by worker "w1")."""
    docs.ingest("docs", [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)])
    embedder = HashEmbedder(64)
    collection = docs.collection("docs")
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        chunk_stale_records(conn, collection, embedder, limit=len(texts))
        model_id = bind_model(conn, collection, embedder)
        claimed = claim_chunks(conn, collection.id, limit=100, lease_seconds=60, worker_id="w1")
    return model_id, claimed


def test_store_vectors_writes_each_vector_to_its_own_chunk_bit_for_bit(
    docs: Platform, db_url: str
) -> None:
    """The binary COPY path: every stored vector is exactly the float32 vector given for its
    chunk, also for two stores inside one outer transaction (each a savepoint of it)."""
    model_id, claimed = _claim_all(docs, db_url, [f"text number {i}" for i in range(6)])
    assert len(claimed) == 6
    vectors = np.random.default_rng(7).standard_normal((6, 64)).astype(np.float32)
    vectors[0, :3] = [1e-38, -3.4e38, 0.0]  # denormal-adjacent, extreme and zero values
    with psycopg.connect(libpq_url(db_url)) as conn:
        assert store_vectors(conn, model_id, "w1", claimed[:3], vectors[:3]) == 3
        assert store_vectors(conn, model_id, "w1", claimed[3:], vectors[3:]) == 3
        conn.commit()
    with psycopg.connect(libpq_url(db_url)) as conn:
        stored = dict(
            conn.execute("SELECT chunk_id, embedding::real[] FROM embedplat.embeddings").fetchall()
        )
    assert sorted(stored) == sorted(c.chunk_id for c in claimed)
    for chunk, vector in zip(claimed, vectors, strict=True):
        np.testing.assert_array_equal(np.array(stored[chunk.chunk_id], dtype=np.float32), vector)


def test_store_vectors_refuses_a_nan_vector_and_stores_nothing(docs: Platform, db_url: str) -> None:
    model_id, claimed = _claim_all(docs, db_url, ["one", "two"])
    vectors = HashEmbedder(64).embed([c.text for c in claimed])
    vectors[1, 5] = np.nan
    with (
        psycopg.connect(libpq_url(db_url), autocommit=True) as conn,
        pytest.raises(psycopg.errors.DataException, match="NaN"),
    ):
        store_vectors(conn, model_id, "w1", claimed, vectors)
    c = counts(db_url)
    assert c["embeddings"] == 0 and c["queue"] == 2


def test_poison_item_is_retried_parked_reported_and_does_not_block(
    docs: Platform, db_url: str
) -> None:
    docs.ingest(
        "docs",
        [{"id": f"ok{i}", "text": f"fine text number {i}"} for i in range(9)]
        + [{"id": "bad", "text": "POISON pill"}],
    )
    embedder = HashEmbedder(64, fail_on=lambda t: "POISON" in t)
    report = _run_sync(db_url, embedder, max_attempts=3, backoff_base_s=0, batch_size=4)
    assert report.chunks_embedded == 9
    assert report.chunks_failed == 3 and report.chunks_parked == 1
    status = docs.status()[0]
    assert status.failed == 1 and status.stale == 0 and status.embedded == 9
    with psycopg.connect(libpq_url(db_url)) as conn:
        rows = conn.execute(
            "SELECT record_id, attempts, last_error FROM embedplat.failed_work"
        ).fetchall()
    assert len(rows) == 1 and rows[0][0] == "bad" and rows[0][1] == 3
    assert "injected embedding failure" in rows[0][2]

    assert docs.retry_failed("docs") == 1
    assert docs.status()[0].failed == 0
    healed = _run_sync(db_url, HashEmbedder(64))
    assert healed.chunks_embedded == 1 and docs.status()[0].embedded == 10


def test_reconcile_repairs_drift(docs: Platform, db_url: str) -> None:
    docs.ingest("docs", [{"id": f"r{i}", "text": _paragraphs(i, 2, 10)} for i in range(4)])
    _run_sync(db_url, HashEmbedder(64))
    with psycopg.connect(libpq_url(db_url)) as conn:
        # Drift the fast path cannot see: a vector deleted by hand, a chunk edited in place.
        conn.execute(
            "DELETE FROM embedplat.embeddings WHERE chunk_id = (SELECT min(id) FROM embedplat.chunks)"
        )
        conn.execute(
            "UPDATE embedplat.chunks SET content = 'tampered' "
            "WHERE id = (SELECT max(id) FROM embedplat.chunks)"
        )
    report = docs.reconcile("docs")
    assert report.records_rechunked == 1
    assert report.stale_vectors_removed == 1
    # Two chunks lack a current vector: the one whose vector was deleted, and the tampered one
    # (its vector no longer matches its text hash and was just removed).
    assert report.chunks_requeued == 2
    _run_sync(db_url, HashEmbedder(64))
    c = counts(db_url)
    assert c["embeddings"] == c["chunks"] and c["queue"] == 0
    with psycopg.connect(libpq_url(db_url)) as conn:
        assert conn.execute(
            "SELECT count(*) FROM embedplat.chunks WHERE content = 'tampered'"
        ).fetchone() == (0,)
    assert docs.reconcile("docs").to_json() == {
        "records_rechunked": 0,
        "chunks_requeued": 0,
        "stale_vectors_removed": 0,
        "foreign_vectors_removed": 0,
        "queue_hashes_fixed": 0,
        "attached_records_inserted": 0,
        "attached_records_updated": 0,
        "attached_records_deleted": 0,
    }
