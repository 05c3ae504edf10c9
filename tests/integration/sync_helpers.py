"""Shared helpers for sync tests: a logging test embedder and a runnable sync process."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psycopg

from embedplat.db.connection import libpq_url
from embedplat.embedders.testing import HashEmbedder


class LoggingEmbedder(HashEmbedder):
    """A HashEmbedder that appends every embedded text to a file (one JSON string per line).

    The log is written *before* returning vectors, so it records every text the model saw,
    including work that a killed process never stored.
    """

    def __init__(self, log: Path, dimensions: int = 64, delay_s: float = 0.0) -> None:
        super().__init__(dimensions, delay_s=delay_s)
        self.log = log

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = super().embed(texts)
        with self.log.open("a", encoding="utf-8") as fh:
            for text in texts:
                fh.write(json.dumps(text) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return vectors


def read_log(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]


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
    """``python sync_helpers.py URL COLLECTION LOG DELAY LEASE``: one sync process."""
    from embedplat.sync import SyncOptions, sync

    url, collection, log, delay, lease = sys.argv[1:6]
    embedder = LoggingEmbedder(Path(log), delay_s=float(delay))
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
