"""Leases never outlive their holder: a killed holder's chunks are claimable at once, a clean
exit hands its leases back, work leased by a live process is reported, and one failing
collection does not stop the sync of the others."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.db.locks import LockKey
from embedplat.errors import ModelError
from embedplat.sync import SyncOptions, claim_chunks, hold_lease_liveness, sync
from tests.fix_embedders import REPO_ROOT, HashEmbedder, plugin_env
from tests.waiting import wait_for

from .search_helpers import hash_sync, word_rows


def _queue(url: str) -> dict[str, int]:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM embedplat.pending_work),"
            "       (SELECT count(*) FROM embedplat.claimable_work),"
            "       (SELECT count(*) FROM embedplat.embedding_queue WHERE leased_by IS NOT NULL),"
            "       (SELECT count(*) FROM embedplat.embeddings)"
        ).fetchone()
    assert row is not None
    return {"pending": row[0], "claimable": row[1], "leased": row[2], "embeddings": row[3]}


def _chunked_collection(platform: Platform, url: str, n: int = 30) -> None:
    """Collection ``docs`` with its records chunked and every chunk queued (none embedded)."""
    platform.create_collection("docs", model="test-hash-64")
    platform.ingest("docs", word_rows(n, seed=7, metadata=lambda i, rng: {}))

    class Refuses(HashEmbedder):
        def embed(self, texts: Any) -> np.ndarray:
            raise KeyboardInterrupt  # stop right after chunking, with nothing stored

    with pytest.raises(KeyboardInterrupt):
        sync(lambda: psycopg.connect(libpq_url(url)), lambda name: Refuses(64), "docs")


def test_clean_exit_hands_leases_back(platform: Platform, db_url: str) -> None:
    _chunked_collection(platform, db_url)
    queue = _queue(db_url)
    # the interrupted sync had claimed chunks; on its way out it released them all
    assert queue["pending"] == 30 and queue["leased"] == 0 and queue["claimable"] == 30


def test_killed_holder_leases_are_claimable_at_once(platform: Platform, db_url: str) -> None:
    _chunked_collection(platform, db_url)
    code = (
        "import sys, time, psycopg\n"
        "from embedplat.sync import claim_chunks, hold_lease_liveness\n"
        "conn = psycopg.connect(sys.argv[1], autocommit=True)\n"
        "hold_lease_liveness(conn, 'doomed')\n"
        "got = claim_chunks(conn, 1, limit=12, lease_seconds=3600, worker_id='doomed')\n"
        "print(len(got), flush=True)\n"
        "time.sleep(3600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, libpq_url(db_url)],
        stdout=subprocess.PIPE,
        cwd=str(REPO_ROOT),
        env={**os.environ, **plugin_env()},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"12\n"
        alive = _queue(db_url)
        assert alive["leased"] == 12 and alive["claimable"] == 18  # a live lease is respected
        with platform.connection() as conn:
            holders = conn.execute(
                "SELECT holder, chunks, alive FROM embedplat.lease_holders"
            ).fetchall()
        assert holders == [("doomed", 12, True)]
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        # the lease runs for an hour, but its holder is gone: claimable as soon as the server
        # has closed the dead connection
        wait_for(lambda: _queue(db_url)["claimable"] == 30, 120, "the dead holder's leases")
    finally:
        if holder.poll() is None:
            holder.kill()
    report = hash_sync(db_url)
    assert report.chunks_embedded == 30 and report.chunks_leased_elsewhere == 0
    assert _queue(db_url) == {"pending": 0, "claimable": 0, "leased": 0, "embeddings": 30}


def test_work_leased_by_a_live_process_is_reported(platform: Platform, db_url: str) -> None:
    _chunked_collection(platform, db_url)
    with psycopg.connect(libpq_url(db_url), autocommit=True) as other:
        hold_lease_liveness(other, "busy-worker")
        taken = claim_chunks(other, 1, limit=5, lease_seconds=3600, worker_id="busy-worker")
        assert len(taken) == 5
        report = hash_sync(db_url)
        assert report.chunks_embedded == 25
        assert report.more_work
        assert report.chunks_leased_elsewhere == 5
        assert [(h.holder, h.chunks, h.alive) for h in report.leased_elsewhere] == [
            ("busy-worker", 5, True)
        ]
        assert report.to_json()["chunks_leased_elsewhere"] == 5
        status = {s.name: s for s in platform.status()}["docs"]
        assert status.leased_chunks == 5 and type(status.to_json()["leased_chunks"]) is int
        assert [(h.holder, h.chunks) for h in status.lease_holders] == [("busy-worker", 5)]
        assert status.to_json()["lease_holders"][0]["alive"] is True
    # the other process is gone now; its chunks go to the next sync
    assert hash_sync(db_url).chunks_embedded == 5


def test_liveness_key_agrees_with_the_view(db_url: str) -> None:
    with psycopg.connect(libpq_url(db_url)) as conn:
        row = conn.execute(
            "SELECT definition FROM pg_views "
            "WHERE schemaname = 'embedplat' AND viewname = 'live_lease_holders'"
        ).fetchone()
    assert row is not None and f"{int(LockKey.LEASE_HOLDER)}" in row[0]


def test_one_failing_collection_does_not_stop_the_others(platform: Platform, db_url: str) -> None:
    for name in ("a-broken", "b-fine", "c-fine"):
        platform.create_collection(name, model="test-hash-64")
        platform.ingest(name, word_rows(5, seed=1, metadata=lambda i, rng: {}))

    # collection a-broken asks for a model that cannot be loaded
    with platform.connection() as conn:
        conn.execute("UPDATE embedplat.collections SET model_name = 'gone' WHERE name = 'a-broken'")

    def picky(name: str) -> HashEmbedder:
        if name == "gone":
            raise ModelError("cannot load embedding model 'gone'")
        return HashEmbedder(64)

    report = sync(
        lambda: psycopg.connect(libpq_url(db_url)), picky, None, SyncOptions(build_index=False)
    )
    assert report.chunks_embedded == 10
    assert [(f.collection, f.error) for f in report.failures] == [
        ("a-broken", "cannot load embedding model 'gone'")
    ]
    assert report.to_json()["failed_collections"] == [
        {"collection": "a-broken", "error": "cannot load embedding model 'gone'"}
    ]
    # a named collection still raises its error
    with pytest.raises(ModelError):
        sync(lambda: psycopg.connect(libpq_url(db_url)), picky, "a-broken")
