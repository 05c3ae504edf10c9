"""Per-collection counts for `embedplat status` and ``Platform.status()``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from embedplat.switch import SwitchProgress, switch_progress
from embedplat.sync import LeaseHolder, lease_holders

# One row per collection. `stale` counts chunks waiting for a vector of the active model plus
# records whose content changed since they were chunked (their chunks are not even known yet);
# a model switch's back-fill is not stale (searches do not wait for it): its progress is the
# collection's `switch`. `failed` counts work parked after too many attempts, of either kind.
_STATUS = """
SELECT c.name,
       c.model_name AS model,
       m.name AS active_model,
       m.dimensions AS dimensions,
       (SELECT count(*) FROM embedplat.records r WHERE r.collection_id = c.id) AS records,
       (SELECT count(*) FROM embedplat.chunks ch WHERE ch.collection_id = c.id) AS chunks,
       (SELECT count(*)
          FROM embedplat.embeddings e
          JOIN embedplat.chunks ch ON ch.id = e.chunk_id
         WHERE e.collection_id = c.id AND e.model_id = c.active_model_id
           AND e.text_hash = ch.text_hash) AS embedded,
       (SELECT count(*) FROM embedplat.pending_work q
         WHERE q.collection_id = c.id AND NOT q.for_switch) AS pending_chunks,
       (SELECT count(*) FROM embedplat.stale_records r
         WHERE r.collection_id = c.id) AS pending_records,
       (SELECT coalesce(sum(h.chunks), 0)::bigint FROM embedplat.lease_holders h
         WHERE h.collection_id = c.id AND h.alive) AS leased_chunks,
       (SELECT count(*) FROM embedplat.embedding_queue q
         WHERE q.collection_id = c.id AND q.state = 'failed')
       + (SELECT count(*) FROM embedplat.parked_records r
         WHERE r.collection_id = c.id) AS failed,
       LEAST(
         (SELECT min(r.content_changed_at) FROM embedplat.stale_records r
           WHERE r.collection_id = c.id),
         (SELECT min(q.enqueued_at) FROM embedplat.pending_work q
           WHERE q.collection_id = c.id AND NOT q.for_switch),
         (SELECT min(p.queued_at) FROM embedplat.attach_pending p
           WHERE p.collection_id = c.id)
       ) AS oldest_stale_change,
       coalesce(a.pending_rows, 0) AS pending_rows,
       a.source AS attached_to,
       a.state AS attachment_state,
       a.last_error AS attachment_error,
       now() AS checked_at
FROM embedplat.collections c
LEFT JOIN embedplat.embedding_models m ON m.id = c.active_model_id
LEFT JOIN embedplat.attachment_status a ON a.collection_id = c.id
ORDER BY c.name
"""


@dataclass(frozen=True, slots=True)
class CollectionStatus:
    """Counts for one collection."""

    name: str
    model: str
    active_model: str | None
    dimensions: int | None
    records: int
    chunks: int
    embedded: int
    pending_chunks: int
    pending_records: int
    # Rows of the attached table written by bulk statements whose records the next sync derives.
    pending_rows: int
    leased_chunks: int
    failed: int
    oldest_stale_change: datetime | None
    # For a collection attached to an app table: the table, the attachment's state ("ok",
    # "backfilling", "error", "triggers_missing", "columns_missing", "source_dropped") and the
    # last trigger error (see embedplat.attachment_status); None for an ingested collection.
    attached_to: str | None
    attachment_state: str | None
    attachment_error: str | None
    checked_at: datetime
    # Processes holding unexpired leases on this collection's chunks (dead ones included).
    lease_holders: tuple[LeaseHolder, ...] = ()
    # The model switch in progress, if any (docs/models.md).
    switch: SwitchProgress | None = None

    @property
    def stale(self) -> int:
        """Work still to do: chunks without a current vector, records not yet chunked and
        attached rows whose records are not yet derived."""
        return self.pending_chunks + self.pending_records + self.pending_rows

    @property
    def lag_seconds(self) -> float | None:
        """Age of the oldest change not yet embedded (None when nothing is pending)."""
        if self.oldest_stale_change is None:
            return None
        return max(0.0, (self.checked_at - self.oldest_stale_change).total_seconds())

    def to_json(self) -> dict[str, Any]:
        """The JSON contract of `embedplat status --json` (fields may be added, not renamed)."""
        return {
            "name": self.name,
            "model": self.model,
            "records": self.records,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "stale": self.stale,
            "failed": self.failed,
            "pending_chunks": self.pending_chunks,
            "pending_records": self.pending_records,
            "pending_rows": self.pending_rows,
            "leased_chunks": self.leased_chunks,
            "lease_holders": [h.to_json() for h in self.lease_holders],
            "dimensions": self.dimensions,
            "oldest_stale_change": (
                self.oldest_stale_change.isoformat() if self.oldest_stale_change else None
            ),
            "lag_seconds": self.lag_seconds,
            "attached_to": self.attached_to,
            "attachment_state": self.attachment_state,
            "attachment_error": self.attachment_error,
            "switch": None if self.switch is None else self.switch.to_json(),
        }


def collection_status(conn: psycopg.Connection[Any]) -> list[CollectionStatus]:
    """Counts for every collection."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_STATUS).fetchall()
    holders: dict[str, list[LeaseHolder]] = {}
    for holder in lease_holders(conn):
        holders.setdefault(holder.collection, []).append(holder)
    switches = {s.collection: s for s in switch_progress(conn)}
    return [
        CollectionStatus(
            **row,
            lease_holders=tuple(holders.get(row["name"], ())),
            switch=switches.get(row["name"]),
        )
        for row in rows
    ]
