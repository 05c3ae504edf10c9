"""Shared helpers for sync tests: a logging test embedder and a runnable sync process.

Run as ``python -m tests.integration.sync_helpers`` from the repository root.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psycopg

from embedplat.db.connection import libpq_url
from tests.fix_embedders import HashEmbedder, ObservedEmbedder, read_log

__all__ = ["counts", "logging_embedder", "read_log"]


def logging_embedder(log: Path, dimensions: int = 64, delay_s: float = 0.0) -> ObservedEmbedder:
    """A test-hash embedder that sleeps ``delay_s`` per call, then logs every text it embedded.

    The log is written *before* returning vectors, so it records every text the model saw,
    including work that a killed process never stored.
    """
    return ObservedEmbedder(HashEmbedder(dimensions), log, delay_s)


def counts(url: str, collection: str = "docs") -> dict[str, int]:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            """
            SELECT (SELECT count(*) FROM embedplat.chunks ch WHERE ch.collection_id = c.id),
                   (SELECT count(*) FROM embedplat.embeddings e WHERE e.collection_id = c.id),
                   (SELECT count(*) FROM embedplat.embedding_queue q WHERE q.collection_id = c.id),
                   (SELECT count(*) FROM embedplat.records r WHERE r.collection_id = c.id
                       AND r.chunked_hash IS DISTINCT FROM r.content_hash)
            FROM embedplat.collections c WHERE c.name = %s
            """,
            (collection,),
        ).fetchone()
    assert row is not None
    return {"chunks": row[0], "embeddings": row[1], "queue": row[2], "stale_records": row[3]}


def main() -> None:
    """``python -m tests.integration.sync_helpers URL COLLECTION LOG DELAY LEASE``: one sync.

    Prints ``ready`` once imported and waits for a line on stdin before it starts, so a test can
    start several processes at the same moment, whatever their start-up times.
    """
    from embedplat.sync import SyncOptions, sync

    url, collection, log, delay, lease = sys.argv[1:6]
    embedder = logging_embedder(Path(log), delay_s=float(delay))
    print("ready", flush=True)
    sys.stdin.readline()
    report = sync(
        lambda: psycopg.connect(libpq_url(url)),
        lambda name: embedder,
        collection,
        SyncOptions(
            batch_size=4,
            claim_factor=1,
            lease_seconds=int(lease),
            record_batch=5,
            build_index=False,
        ),
    )
    print(json.dumps(report.to_json()))


if __name__ == "__main__":
    main()
