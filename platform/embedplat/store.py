"""Writing records: binary COPY into a staging table, then one set-based upsert.

Semantics (by ``(collection, external_id)``):

* new id → inserted; the record is stale until the sync engine chunks and embeds it;
* same content and metadata → nothing is written at all (no new work, no touched row);
* changed content → updated; the database recomputes ``content_hash`` and the record becomes
  stale because it no longer equals ``chunked_hash``;
* metadata-only change → updated; the content hash is unchanged so nothing is re-embedded.

Within one call the last occurrence of an id wins; the others are counted as ``duplicates``
(ids are text: ``1`` and ``"1"`` in JSON name the same record). Concurrent ingests into one
collection take turns (a transaction-level advisory lock): two calls upserting the same ids in
different orders would otherwise deadlock. The whole call is one transaction: with
``on_error="fail"`` a single bad row rolls back everything the call wrote, and nothing stored
before the call is touched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg

from embedplat.attach import refuse_ingest_if_attached
from embedplat.db.locks import LockKey
from embedplat.errors import CollectionNotFoundError, IngestError, InputProblem
from embedplat.ingest import RecordInput

OnError = Literal["fail", "skip"]

# Rows per COPY + upsert round; bounds the temporary table and the memory of one round.
FLUSH_ROWS = 20_000
MAX_LISTED_PROBLEMS = 1_000
MAX_LISTED_DUPLICATES = 1_000

_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS embedplat_ingest_staging (
    seq bigint NOT NULL,
    external_id text NOT NULL,
    content text NOT NULL,
    metadata text NOT NULL
) ON COMMIT DROP
"""

_UPSERT = """
WITH src AS (
    SELECT DISTINCT ON (external_id) external_id, content, metadata::jsonb AS metadata
    FROM embedplat_ingest_staging
    ORDER BY external_id, seq DESC
),
prev AS (
    SELECT s.external_id,
           r.id IS NULL AS is_new,
           r.content IS DISTINCT FROM s.content AS content_changed,
           r.metadata IS DISTINCT FROM s.metadata AS metadata_changed
    FROM src s
    LEFT JOIN embedplat.records r
      ON r.collection_id = %(collection_id)s AND r.external_id = s.external_id
),
upsert AS (
    INSERT INTO embedplat.records AS r (collection_id, external_id, content, metadata)
    SELECT %(collection_id)s, external_id, content, metadata FROM src
    ON CONFLICT (collection_id, external_id) DO UPDATE
    SET content = EXCLUDED.content,
        metadata = EXCLUDED.metadata,
        updated_at = now(),
        content_changed_at = CASE WHEN r.content IS DISTINCT FROM EXCLUDED.content
                                  THEN now() ELSE r.content_changed_at END,
        chunk_attempts = CASE WHEN r.content IS DISTINCT FROM EXCLUDED.content
                              THEN 0 ELSE r.chunk_attempts END,
        chunk_error = CASE WHEN r.content IS DISTINCT FROM EXCLUDED.content
                           THEN NULL ELSE r.chunk_error END
    -- Identical rows are not touched: no dead tuple, no trigger, no new work.
    WHERE r.content IS DISTINCT FROM EXCLUDED.content
       OR r.metadata IS DISTINCT FROM EXCLUDED.metadata
    RETURNING 1
)
SELECT count(*) FILTER (WHERE is_new),
       count(*) FILTER (WHERE NOT is_new AND content_changed),
       count(*) FILTER (WHERE NOT is_new AND NOT content_changed AND metadata_changed),
       count(*) FILTER (WHERE NOT is_new AND NOT content_changed AND NOT metadata_changed),
       (SELECT count(*) FROM upsert)
FROM prev
"""


@dataclass
class IngestResult:
    """Counts of one ingest call. ``updated`` counts content changes (re-embedding needed)."""

    inserted: int = 0
    updated: int = 0
    metadata_updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    problems: list[InputProblem] = field(default_factory=list)
    # Rows whose id came again later in the same input (the later row won), and the first ids.
    duplicates: int = 0
    duplicate_ids: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Rows written or confirmed unchanged."""
        return self.inserted + self.updated + self.metadata_updated + self.unchanged

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (the shape of `embedplat ingest --json`)."""
        return {
            "inserted": self.inserted,
            "updated": self.updated,
            "metadata_updated": self.metadata_updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "duplicate_ids": self.duplicate_ids,
            "problems": [
                {"source": p.source, "line": p.line, "reason": p.reason} for p in self.problems
            ],
        }


def upsert_records(
    conn: psycopg.Connection[Any],
    collection_id: int,
    items: Iterable[RecordInput | InputProblem],
    *,
    on_error: OnError = "fail",
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Write ``items`` into the collection inside the caller's transaction.

    Raises :class:`IngestError` on the first bad row when ``on_error == "fail"``; the caller's
    transaction must then be rolled back (``Platform.ingest`` and the CLI do).
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    result = IngestResult()
    # One ingest at a time per collection, until the caller's transaction ends: upserts of
    # overlapping ids in different orders (and rounds) would lock rows crosswise and deadlock.
    conn.execute(
        "SELECT pg_advisory_xact_lock(%s::int4, %s::int4)", (int(LockKey.INGEST), collection_id)
    )
    # Hold the collection for the rest of the transaction: a concurrent `collection drop`
    # waits for this ingest instead of failing it halfway with a foreign-key error.
    if (
        conn.execute(
            "SELECT 1 FROM embedplat.collections WHERE id = %s FOR KEY SHARE", (collection_id,)
        ).fetchone()
        is None
    ):
        raise CollectionNotFoundError(
            "the collection was dropped while this ingest started; nothing was written"
        )
    # An attached collection's records come from its table; an ingest would fight it.
    refuse_ingest_if_attached(conn, collection_id)
    seen: set[str] = set()
    # The de-duplicating sort of a 20k-row round spills to disk under the default 4 MB.
    conn.execute("SET LOCAL work_mem = '64MB'")
    conn.execute(_CREATE_STAGING)
    batch: list[tuple[int, str, str, str]] = []
    seq = 0
    for item in items:
        if isinstance(item, InputProblem):
            if on_error == "fail":
                raise IngestError(f"{item} (nothing from this ingest was written)", [item])
            result.rejected += 1
            if len(result.problems) < MAX_LISTED_PROBLEMS:
                result.problems.append(item)
            continue
        if item.external_id in seen:
            result.duplicates += 1
            if len(result.duplicate_ids) < MAX_LISTED_DUPLICATES:
                result.duplicate_ids.append(item.external_id)
        else:
            seen.add(item.external_id)
        seq += 1
        batch.append(
            (seq, item.external_id, item.content, json.dumps(item.metadata, ensure_ascii=False))
        )
        if len(batch) >= FLUSH_ROWS:
            _flush(conn, collection_id, batch, result)
            if progress is not None:
                progress(len(batch))
            batch = []
    if batch:
        _flush(conn, collection_id, batch, result)
        if progress is not None:
            progress(len(batch))
    return result


def _flush(
    conn: psycopg.Connection[Any],
    collection_id: int,
    batch: list[tuple[int, str, str, str]],
    result: IngestResult,
) -> None:
    with conn.cursor() as cur:
        with cur.copy("COPY embedplat_ingest_staging FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "text", "text"])
            for row in batch:
                copy.write_row(row)
        cur.execute(_UPSERT, {"collection_id": collection_id})
        counts = cur.fetchone()
        assert counts is not None
        cur.execute("TRUNCATE embedplat_ingest_staging")
    result.inserted += int(counts[0])
    result.updated += int(counts[1])
    result.metadata_updated += int(counts[2])
    result.unchanged += int(counts[3])
