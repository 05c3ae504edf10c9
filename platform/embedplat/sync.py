"""The sync engine: chunk records whose content changed, embed chunks that lack a vector.

Two stages, both driven by state in the database, so any number of processes (CLI syncs,
Celery workers) can run them at once and split the work:

1. **Chunking.** Records whose database-computed ``content_hash`` differs from
   ``chunked_hash`` are locked with ``FOR UPDATE SKIP LOCKED`` and re-chunked inside one short
   transaction. New chunks are matched to the old ones by text hash: unchanged text keeps its
   row, id and embedding; removed text is deleted (with its vectors); new text is inserted and
   queued for embedding. A killed process rolls back and leaves the record stale.
2. **Embedding.** Queue rows are claimed with ``FOR UPDATE SKIP LOCKED`` and a lease
   (``leased_until``/``leased_by``), committed at once so no transaction stays open during the
   model call. Results are written with compare-and-set: the queue row is deleted only if it
   still carries the same text hash *and* our lease, and only then is the vector stored. A
   chunk whose text changed meanwhile (or whose lease was taken over) keeps its pending work.

Failures are isolated by bisecting the failing batch down to single items; each failing item
counts an attempt, backs off exponentially, and after ``max_attempts`` is parked as
``failed`` with its error (visible in `embedplat status` and ``embedplat.failed_work``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import psycopg

from embedplat.attach import drain
from embedplat.chunking import Chunk, chunk_text
from embedplat.collections import CollectionInfo, get_collection, list_collections
from embedplat.config import DEFAULT_BATCH_SIZE, DEFAULT_LEASE_SECONDS, DEFAULT_MAX_ATTEMPTS
from embedplat.db.locks import LockKey
from embedplat.db.vectors import copy_rows
from embedplat.embedders import Embedder
from embedplat.errors import (
    DatabaseUnavailableError,
    EmbedplatError,
    InvalidInputError,
    ModelMismatchError,
)
from embedplat.indexes import (
    ensure_ann_index,
)
from embedplat.ingest import MAX_RECORD_BYTES
from embedplat.switch import complete_switch, purge_retired, wait_and_purge

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]
EmbedderFactory = Callable[[str], Embedder]

DEFAULT_RECORD_BATCH = 256
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 3600.0
ERROR_TEXT_LIMIT = 2000


def default_worker_id() -> str:
    """host:pid:random — names the lease holder in the queue."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class SyncOptions:
    """Knobs of one sync run."""

    batch_size: int = DEFAULT_BATCH_SIZE
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # Failed items wait backoff_base_s * 2**attempts (capped at BACKOFF_MAX_S) before a retry.
    backoff_base_s: float = BACKOFF_BASE_S
    record_batch: int = DEFAULT_RECORD_BATCH
    # Chunks claimed per round, as a multiple of batch_size: the model sorts a claim by length
    # before batching, so bigger claims waste less padding.
    claim_factor: int = 4
    worker_id: str = field(default_factory=default_worker_id)
    build_index: bool = True
    # Stop after this many claimed rounds (None: until no work is left). Celery tasks use 1.
    max_rounds: int | None = None
    # After this sync ends a model switch, wait out the grace period of the old model's
    # vectors and delete them (the CLI does; otherwise a later sync deletes them).
    wait_retired: bool = False


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """A process holding unexpired leases on a collection's chunks (``embedplat.lease_holders``)."""

    collection: str
    holder: str
    chunks: int
    leased_until: datetime
    alive: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "holder": self.holder,
            "chunks": self.chunks,
            "leased_until": self.leased_until.isoformat(),
            "alive": self.alive,
        }


@dataclass(frozen=True, slots=True)
class CollectionFailure:
    """A collection whose sync failed, with the error in one line."""

    collection: str
    error: str

    def to_json(self) -> dict[str, str]:
        return {"collection": self.collection, "error": self.error}


@dataclass
class SyncReport:
    """What a sync did (the shape of `embedplat sync --json`)."""

    records_chunked: int = 0
    # records whose chunking raised (an attempt counted), and those of them parked for good
    records_failed: int = 0
    records_parked: int = 0
    chunks_embedded: int = 0
    chunks_failed: int = 0
    chunks_parked: int = 0
    chunks_discarded: int = 0
    # Vectors of a model switch's target stored (the back-fill, and edits made during it).
    switch_chunks_embedded: int = 0
    # Collections this sync ended the model switch of (the target is their active model now).
    switched: list[str] = field(default_factory=list)
    # Vectors of models a switch retired, deleted after the grace period.
    retired_vectors_deleted: int = 0
    # Collections whose switch is back-filled and waits for its ANN index (this sync built
    # none: the Celery workers leave index builds to their index task, which then swaps).
    switches_waiting_for_index: list[str] = field(default_factory=list)
    # Keys of an attached table queued by bulk statements, whose records this sync derived
    # (embedplat.attach_drain) before chunking.
    attached_rows_drained: int = 0
    seconds: float = 0.0
    indexes_built: list[str] = field(default_factory=list)
    more_work: bool = False
    # Chunks this sync could not take because another live process holds them.
    leased_elsewhere: list[LeaseHolder] = field(default_factory=list)
    # Collections whose sync failed (a sync of every collection carries on past them).
    failures: list[CollectionFailure] = field(default_factory=list)
    # Things the operator should know (e.g. an index this role may not build).
    notes: list[str] = field(default_factory=list)

    @property
    def chunks_leased_elsewhere(self) -> int:
        """Chunks left for other processes that hold their leases."""
        return sum(h.chunks for h in self.leased_elsewhere)

    def merge(self, other: SyncReport) -> None:
        self.records_chunked += other.records_chunked
        self.records_failed += other.records_failed
        self.records_parked += other.records_parked
        self.chunks_embedded += other.chunks_embedded
        self.chunks_failed += other.chunks_failed
        self.chunks_parked += other.chunks_parked
        self.chunks_discarded += other.chunks_discarded
        self.switch_chunks_embedded += other.switch_chunks_embedded
        self.switched += other.switched
        self.retired_vectors_deleted += other.retired_vectors_deleted
        self.switches_waiting_for_index += other.switches_waiting_for_index
        self.attached_rows_drained += other.attached_rows_drained
        self.indexes_built += other.indexes_built
        self.more_work = self.more_work or other.more_work
        self.leased_elsewhere += other.leased_elsewhere
        self.failures += other.failures
        self.notes += other.notes

    def to_json(self) -> dict[str, Any]:
        return {
            "records_chunked": self.records_chunked,
            "records_failed": self.records_failed,
            "records_parked": self.records_parked,
            "chunks_embedded": self.chunks_embedded,
            "chunks_failed": self.chunks_failed,
            "chunks_parked": self.chunks_parked,
            "chunks_discarded": self.chunks_discarded,
            "switch_chunks_embedded": self.switch_chunks_embedded,
            "switched": self.switched,
            "retired_vectors_deleted": self.retired_vectors_deleted,
            "attached_rows_drained": self.attached_rows_drained,
            "seconds": round(self.seconds, 3),
            "indexes_built": self.indexes_built,
            "more_work": self.more_work,
            "chunks_leased_elsewhere": self.chunks_leased_elsewhere,
            "leased_elsewhere": [h.to_json() for h in self.leased_elsewhere],
            "failed_collections": [f.to_json() for f in self.failures],
            "notes": self.notes,
        }


class Progress:
    """Receives progress events; the CLI shows a bar, everything else ignores them."""

    def start(self, collection: str, records: int, chunks: int) -> None:
        """Work known at the start of a collection's sync."""

    def chunked(self, records: int, new_chunks: int) -> None:
        """``records`` were chunked, queueing ``new_chunks`` more chunks."""

    def embedded(self, chunks: int) -> None:
        """``chunks`` vectors were stored (or failed)."""


# -- model registration -----------------------------------------------------------------------


def register_model(conn: Connection, embedder: Embedder) -> int:
    """The id of ``embedder``'s row in ``embedplat.embedding_models`` (created if missing)."""
    row = conn.execute(
        "INSERT INTO embedplat.embedding_models (name, dimensions, normalized, fingerprint) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (name, fingerprint) DO NOTHING RETURNING id",
        (embedder.name, embedder.dimensions, embedder.normalized, embedder.fingerprint),
    ).fetchone()
    if row is None:
        row = conn.execute(
            "SELECT id FROM embedplat.embedding_models WHERE name = %s AND fingerprint = %s",
            (embedder.name, embedder.fingerprint),
        ).fetchone()
    assert row is not None
    return int(row[0])


def active_model(conn: Connection, collection: CollectionInfo) -> tuple[int, int] | None:
    """(id, dimensions) of the collection's active model, None before its first sync."""
    row = conn.execute(
        "SELECT m.id, m.dimensions FROM embedplat.collections c "
        "JOIN embedplat.embedding_models m ON m.id = c.active_model_id WHERE c.id = %s",
        (collection.id,),
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def bind_model(conn: Connection, collection: CollectionInfo, embedder: Embedder) -> int:
    """Make ``embedder`` the collection's active model, or refuse if another one is active."""
    model_id = register_model(conn, embedder)
    # Only while the collection still names this model: a switch of a collection with nothing
    # embedded changes the name alone (embedplat.model_switch).
    row = conn.execute(
        "UPDATE embedplat.collections SET active_model_id = %s "
        "WHERE id = %s AND active_model_id IS NULL AND model_name = %s RETURNING id",
        (model_id, collection.id, collection.model_name),
    ).fetchone()
    if row is not None:
        return model_id
    active = conn.execute(
        "SELECT c.active_model_id, m.name, m.fingerprint, c.model_name "
        "FROM embedplat.collections c "
        "LEFT JOIN embedplat.embedding_models m ON m.id = c.active_model_id WHERE c.id = %s",
        (collection.id,),
    ).fetchone()
    assert active is not None
    if active[0] is None:
        raise ModelMismatchError(
            f"collection {collection.name!r} now uses model {active[3]}, not "
            f"{collection.model_name}: "
            "its model was switched while this sync started; run the sync again"
        )
    if int(active[0]) != model_id:
        raise ModelMismatchError(
            f"collection {collection.name!r} holds vectors of model {active[1]} "
            f"(fingerprint {str(active[2])[:12]}), but the model loaded now is {embedder.name} "
            f"(fingerprint {embedder.fingerprint[:12]}); vectors of two models are never mixed. "
            "Restore the original model files, or re-embed into a new collection"
        )
    return model_id


class RecordTooLargeError(InvalidInputError):
    """A record's text is over MAX_RECORD_BYTES (it can only come from a plain SQL write)."""


# -- stage 1: chunking ------------------------------------------------------------------------

# Candidates first, without locks: ids and sizes, so one transaction takes at most
# CHUNK_BATCH_BYTES of text (a huge record gets a transaction of its own instead of holding the
# locks of its neighbours while it is cut). Then the chosen rows are locked and re-checked.
# Locked, skipping records another process is chunking: concurrent syncs take different
# records (without SKIP LOCKED here, all of them picked the same first ones, all but one found
# them locked, and those quit with nothing to do while stale records remained).
_STALE_CANDIDATES = """
SELECT id, octet_length(content)
FROM embedplat.stale_records
WHERE collection_id = %s
ORDER BY id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""

_CLAIM_RECORDS = """
SELECT id, content, chunk_attempts
FROM embedplat.stale_records
WHERE collection_id = %s AND id = ANY(%s)
ORDER BY id
FOR UPDATE SKIP LOCKED
"""

_PARK_RECORD = """
UPDATE embedplat.records
SET chunk_attempts = chunk_attempts + 1,
    chunk_error = CASE WHEN %(park)s THEN %(error)s END
WHERE id = %(id)s
"""

# Text cut in one chunking transaction (the first record always goes, whatever its size).
CHUNK_BATCH_BYTES = 4 * 1024 * 1024


@dataclass
class ChunkingResult:
    """What one chunking transaction did."""

    chunked: int = 0  # records cut into chunks
    queued: int = 0  # new chunks queued for embedding
    failed: int = 0  # records whose chunking raised (an attempt counted)
    parked: int = 0  # ... of those, parked for good (see embedplat.failed_work)

    @property
    def taken(self) -> int:
        return self.chunked + self.failed


def _batch_by_size(candidates: Sequence[tuple[int, int]], budget: int) -> list[int]:
    """The longest prefix of (id, bytes) within ``budget`` bytes, and at least one id."""
    ids: list[int] = []
    total = 0
    for record_id, size in candidates:
        if ids and total + size > budget:
            break
        ids.append(record_id)
        total += size
    return ids


def chunk_stale_records(
    conn: Connection,
    collection: CollectionInfo,
    embedder: Embedder,
    *,
    limit: int,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> ChunkingResult:
    """Re-chunk up to ``limit`` stale records (at most CHUNK_BATCH_BYTES of text) in one
    transaction.

    A record larger than MAX_RECORD_BYTES (SQL writers are not held to ingest's limit) is parked
    at once; one whose chunking raises counts an attempt and is parked after ``max_attempts``,
    with its error in ``chunk_error`` (see ``embedplat.failed_work``). Either way its old
    chunks and vectors stay, and the other records of the batch go on.

    """
    counter = embedder.token_counter()
    result = ChunkingResult()
    with conn.transaction():
        candidates = conn.execute(_STALE_CANDIDATES, (collection.id, limit)).fetchall()
        chosen = _batch_by_size(
            [(int(r[0]), int(r[1] or 0)) for r in candidates], CHUNK_BATCH_BYTES
        )
        if not chosen:
            return result
        rows = conn.execute(_CLAIM_RECORDS, (collection.id, chosen)).fetchall()
        cut: dict[int, list[Chunk]] = {}
        for record_id, content, attempts in rows:
            try:
                size = len(content.encode("utf-8", "surrogatepass"))
                if size > MAX_RECORD_BYTES:
                    raise RecordTooLargeError(
                        f"the record's text is {size:,} bytes; records may hold at most "
                        f"{MAX_RECORD_BYTES:,} bytes (split it into several records)"
                    )
                cut[int(record_id)] = chunk_text(
                    content,
                    max_tokens=collection.chunk_tokens,
                    overlap=collection.chunk_overlap,
                    counter=counter,
                )
            except Exception as exc:  # the tokenizer's failure modes are open-ended
                park = isinstance(exc, RecordTooLargeError) or int(attempts) + 1 >= max_attempts
                log.warning("chunking record %s failed: %s", record_id, exc)
                conn.execute(
                    _PARK_RECORD,
                    {"id": int(record_id), "park": park, "error": one_line_error(exc)},
                )
                result.failed += 1
                result.parked += int(park)
        if cut:
            result.queued = _replace_chunks(conn, collection.id, cut)
            result.chunked = len(cut)
    return result


def _replace_chunks(conn: Connection, collection_id: int, cut: dict[int, list[Chunk]]) -> int:
    """Write the new chunking of each record: keep matching rows, delete and insert the rest,
    and mark the records chunked. Returns how many chunks were queued for embedding."""
    record_ids = list(cut)
    existing: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for chunk_id, record_id, text_hash in conn.execute(
        "SELECT id, record_id, text_hash FROM embedplat.chunks "
        "WHERE record_id = ANY(%s) ORDER BY record_id, ordinal, id",
        (record_ids,),
    ):
        existing[int(record_id)].append((int(chunk_id), bytes(text_hash)))

    keep_updates: list[tuple[int, int, int, int]] = []  # (chunk_id, ordinal, start, end)
    delete_ids: list[int] = []
    inserts: list[tuple[int, int, str, int, int, int]] = []
    for record_id, chunks in cut.items():
        kept, removed, added = diff_chunks(existing.get(record_id, []), chunks)
        keep_updates += kept
        delete_ids += removed
        inserts += [
            (record_id, c.ordinal, c.text, c.char_start, c.char_end, c.token_count) for c in added
        ]

    if delete_ids:
        conn.execute("DELETE FROM embedplat.chunks WHERE id = ANY(%s)", (delete_ids,))
    if keep_updates:
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE embedplat.chunks SET ordinal = %s, char_start = %s, char_end = %s "
                "WHERE id = %s AND (ordinal, char_start, char_end) IS DISTINCT FROM "
                "(%s, %s, %s)",
                [(o, s, e, cid, o, s, e) for cid, o, s, e in keep_updates],
            )
    queued = _insert_chunks(conn, collection_id, inserts) if inserts else 0
    conn.execute(
        "UPDATE embedplat.records SET chunked_hash = content_hash, chunk_attempts = 0, "
        "chunk_error = NULL WHERE id = ANY(%s)",
        (record_ids,),
    )
    return queued


def diff_chunks(
    old: Sequence[tuple[int, bytes]], new: Sequence[Chunk]
) -> tuple[list[tuple[int, int, int, int]], list[int], list[Chunk]]:
    """Match new chunks to existing rows by text hash (as a multiset, in order).

    Returns (kept rows with their new ordinal/span, ids of rows to delete, chunks to insert).
    """
    available: dict[bytes, list[int]] = defaultdict(list)
    for chunk_id, text_hash in old:
        available[text_hash].append(chunk_id)
    kept: list[tuple[int, int, int, int]] = []
    added: list[Chunk] = []
    for chunk in new:
        ids = available.get(chunk.text_hash)
        if ids:
            kept.append((ids.pop(0), chunk.ordinal, chunk.char_start, chunk.char_end))
        else:
            added.append(chunk)
    removed = [cid for ids in available.values() for cid in ids]
    return kept, removed, added


def _insert_chunks(
    conn: Connection, collection_id: int, rows: list[tuple[int, int, str, int, int, int]]
) -> int:
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS embedplat_new_chunks ("
            " record_id bigint, ordinal int, content text, char_start int, char_end int,"
            " token_count int) ON COMMIT DROP"
        )
        with cur.copy("COPY embedplat_new_chunks FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int4", "text", "int4", "int4", "int4"])
            for row in rows:
                copy.write_row(row)
        # A new chunk needs a vector of the active model and, while the collection switches
        # models, one of the target too. (A switch that starts while this transaction runs
        # misses these chunks: the swap's completeness check queues them.)
        cur.execute(
            """
            WITH inserted AS (
                INSERT INTO embedplat.chunks
                    (record_id, collection_id, ordinal, content, char_start, char_end, token_count)
                SELECT record_id, %(cid)s, ordinal, content, char_start, char_end, token_count
                FROM embedplat_new_chunks
                RETURNING id, text_hash
            ), for_active AS (
                INSERT INTO embedplat.embedding_queue (chunk_id, collection_id, text_hash)
                SELECT id, %(cid)s, text_hash FROM inserted
                RETURNING 1
            ), for_switch AS (
                INSERT INTO embedplat.embedding_queue
                    (chunk_id, collection_id, text_hash, for_switch)
                SELECT id, %(cid)s, text_hash, true FROM inserted
                WHERE EXISTS (SELECT 1 FROM embedplat.collections c
                              WHERE c.id = %(cid)s AND c.switch_model_name IS NOT NULL)
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM for_active), (SELECT count(*) FROM for_switch)
            """,
            {"cid": collection_id},
        )
        counts = cur.fetchone()
        queued = int(counts[0]) if counts else 0
        cur.execute("DROP TABLE embedplat_new_chunks")
    return queued


# -- stage 2: embedding -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedChunk:
    chunk_id: int
    text_hash: bytes
    text: str
    attempts: int
    # The queue row's kind: false for the active model, true for a switch's target.
    for_switch: bool = False


_CLAIM_JOBS = """
WITH claimable AS (
    SELECT q.chunk_id
    FROM embedplat.claimable_work q
    WHERE q.collection_id = %(cid)s AND q.for_switch = %(switch)s
    ORDER BY q.available_at, q.chunk_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE embedplat.embedding_queue q
SET leased_until = now() + make_interval(secs => %(lease)s), leased_by = %(worker)s
FROM claimable, embedplat.chunks c
WHERE q.chunk_id = claimable.chunk_id AND q.for_switch = %(switch)s AND c.id = q.chunk_id
RETURNING q.chunk_id, q.text_hash, c.content, q.attempts
"""

_STORE = """
WITH done AS (
    DELETE FROM embedplat.embedding_queue q
    USING unnest(%(ids)s::bigint[], %(hashes)s::bytea[]) AS u(chunk_id, text_hash)
    WHERE q.chunk_id = u.chunk_id AND q.for_switch = %(switch)s AND q.text_hash = u.text_hash
      AND q.leased_by = %(worker)s
    RETURNING q.chunk_id, q.text_hash
)
INSERT INTO embedplat.embeddings
    (chunk_id, model_id, collection_id, record_id, text_hash, embedding)
SELECT c.id, %(model)s, c.collection_id, c.record_id, c.text_hash, v.embedding
FROM done
JOIN embedplat.chunks c ON c.id = done.chunk_id AND c.text_hash = done.text_hash
JOIN embedplat_new_vectors v ON v.chunk_id = c.id
ON CONFLICT (chunk_id, model_id) DO UPDATE
SET embedding = EXCLUDED.embedding, text_hash = EXCLUDED.text_hash, created_at = now()
"""

# The collection's models as they are now: FOR KEY SHARE waits for a swap or a cancel of its
# switch in progress (they lock the row FOR UPDATE) and keeps either from starting until the
# vectors are stored, so a vector is only ever stored for the model its queue row is for.
_LOCK_COLLECTION = """
SELECT col.active_model_id, col.backfill_model_id
FROM embedplat.collections col
WHERE col.id = (SELECT ch.collection_id FROM embedplat.chunks ch WHERE ch.id = %(first)s)
FOR KEY SHARE OF col
"""

_LOCK_RECORDS = """
SELECT r.id
FROM embedplat.records r
WHERE r.id IN (SELECT ch.record_id FROM embedplat.chunks ch WHERE ch.id = ANY(%(ids)s))
ORDER BY r.id
FOR KEY SHARE
"""

_LOCK_CHUNKS = """
SELECT ch.id FROM embedplat.chunks ch WHERE ch.id = ANY(%(ids)s) ORDER BY ch.id FOR KEY SHARE
"""

_FAIL = """
UPDATE embedplat.embedding_queue
SET attempts = attempts + 1,
    last_error = %(error)s,
    leased_until = NULL,
    leased_by = NULL,
    state = CASE WHEN attempts + 1 >= %(max_attempts)s THEN 'failed' ELSE 'pending' END,
    available_at = now() + make_interval(secs => least(%(base)s * power(2, attempts), %(cap)s))
WHERE chunk_id = %(chunk_id)s AND for_switch = %(switch)s AND leased_by = %(worker)s
RETURNING state
"""


def claim_chunks(
    conn: Connection,
    collection_id: int,
    *,
    limit: int,
    lease_seconds: int,
    worker_id: str,
    for_switch: bool = False,
) -> list[ClaimedChunk]:
    """Lease up to ``limit`` pending chunks of the collection (committed at once): work of the
    active model, or with ``for_switch`` the back-fill of its switch's target."""
    if limit <= 0:
        return []
    with conn.transaction():
        rows = conn.execute(
            _CLAIM_JOBS,
            {
                "cid": collection_id,
                "limit": limit,
                "lease": lease_seconds,
                "worker": worker_id,
                "switch": for_switch,
            },
        ).fetchall()
    return [ClaimedChunk(int(r[0]), bytes(r[1]), str(r[2]), int(r[3]), for_switch) for r in rows]


def store_vectors(
    conn: Connection,
    model_id: int,
    worker_id: str,
    chunks: Sequence[ClaimedChunk],
    vectors: np.ndarray,
    *,
    for_switch: bool = False,
) -> int:
    """Compare-and-set write; returns how many vectors were stored. Nothing is stored when
    ``model_id`` is no longer the model these queue rows are for (a switch ended or was
    cancelled since they were claimed): the caller re-reads the collection's models."""
    if not chunks:
        return 0
    ids = [c.chunk_id for c in chunks]
    with conn.transaction():
        models = conn.execute(_LOCK_COLLECTION, {"first": ids[0]}).fetchone()
        if models is None or models[1 if for_switch else 0] != model_id:
            return 0
        # Lock order records -> chunks -> queue rows, as a DELETE of a record cascades: the
        # foreign-key checks of the vector insert would otherwise take the record and chunk
        # locks after the queue rows, and deadlock with a delete of the same record.
        conn.execute(_LOCK_RECORDS, {"ids": ids})
        conn.execute(_LOCK_CHUNKS, {"ids": ids})
        with conn.cursor() as cur:
            # The vectors travel as one binary COPY stream (embedplat.db.vectors.copy_rows).
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS embedplat_new_vectors"
                " (chunk_id bigint, embedding vector) ON COMMIT DROP"
            )
            # Empty unless an outer transaction (this one a savepoint of it) stored before.
            cur.execute("DELETE FROM embedplat_new_vectors")
            with cur.copy("COPY embedplat_new_vectors FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(copy_rows(ids, vectors))
            cur.execute(
                _STORE,
                {
                    "ids": ids,
                    "hashes": [c.text_hash for c in chunks],
                    "model": model_id,
                    "worker": worker_id,
                    "switch": for_switch,
                },
            )
            return max(cur.rowcount, 0)


def record_failure(
    conn: Connection, chunk: ClaimedChunk, error: BaseException, options: SyncOptions
) -> str | None:
    """Count a failed attempt for one chunk; returns its new state (None if no longer ours)."""
    message = f"{type(error).__name__}: {error}"[:ERROR_TEXT_LIMIT]
    with conn.transaction():
        row = conn.execute(
            _FAIL,
            {
                "error": message,
                "max_attempts": options.max_attempts,
                "base": options.backoff_base_s,
                "cap": BACKOFF_MAX_S,
                "chunk_id": chunk.chunk_id,
                "worker": options.worker_id,
                "switch": chunk.for_switch,
            },
        ).fetchone()
    return None if row is None else str(row[0])


_UNUSABLE_VECTOR = "the model returned a vector of zeros or non-finite numbers for this text"


def embed_isolating_failures(
    embedder: Embedder, chunks: Sequence[ClaimedChunk]
) -> tuple[list[tuple[ClaimedChunk, np.ndarray]], list[tuple[ClaimedChunk, BaseException]]]:
    """Embed ``chunks``; when a batch raises, bisect it so only the failing items fail."""
    ok: list[tuple[ClaimedChunk, np.ndarray]] = []
    failed: list[tuple[ClaimedChunk, BaseException]] = []

    def run(part: Sequence[ClaimedChunk]) -> None:
        try:
            vectors = embedder.embed([c.text for c in part])
        except Exception as exc:  # the model's failure modes are open-ended
            if len(part) == 1:
                failed.append((part[0], exc))
                return
            middle = len(part) // 2
            run(part[:middle])
            run(part[middle:])
            return
        # A vector with no direction (all zeros, NaN, infinity) has no cosine distance: storing
        # it would make every similarity, duplicate and anomaly score involving it NaN.
        vectors = np.asarray(vectors, dtype=np.float32)
        usable = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).max(axis=1) > 0)
        for chunk, vector, good in zip(part, vectors, usable, strict=True):
            if good:
                ok.append((chunk, vector))
            else:
                failed.append((chunk, ValueError(_UNUSABLE_VECTOR)))

    if chunks:
        run(chunks)
    return ok, failed


class CollectionModels:
    """The embedders one sync of a collection uses, each bound to its ``embedding_models`` row:
    the active model's, and during a switch the target's. :meth:`refresh` re-reads the
    collection after every round, so a sync running through a swap or a cancel goes on with
    the models the collection has then."""

    def __init__(
        self, conn: Connection, collection: CollectionInfo, factory: EmbedderFactory
    ) -> None:
        self.conn = conn
        self.collection = collection
        self.factory = factory
        self.switch_model: str | None = None
        self._active: tuple[Embedder, int] | None = None
        self._target: tuple[Embedder, int] | None = None
        # Why the target cannot be used here (it does not load, or its files differ): the
        # back-fill is left to processes that can, and the report says so.
        self.target_error: str | None = None
        self._state: tuple[Any, ...] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the collection's models; forget the bound ones that changed."""
        row = self.conn.execute(
            "SELECT model_name, active_model_id, switch_model_name, backfill_model_id "
            "FROM embedplat.collections WHERE id = %s",
            (self.collection.id,),
        ).fetchone()
        if row is None:  # dropped meanwhile: the next statements find nothing to do
            return
        state = tuple(row)
        if state == self._state:
            return
        previous, self._state = self._state, state
        model_name, active_id, switch_name, target_id = state
        if previous is not None and (
            model_name != previous[0] or (self._active and self._active[1] != active_id)
        ):
            self._active = None
        # Another switch (or the same one cancelled and started again): bind it afresh.
        if previous is not None and (
            switch_name != previous[2] or (self._target and self._target[1] != target_id)
        ):
            self._target, self.target_error = None, None
        self.collection = replace(self.collection, model_name=str(model_name))
        self.switch_model = None if switch_name is None else str(switch_name)

    def active(self) -> tuple[Embedder, int]:
        """The active model's embedder and id (loaded and bound on first use)."""
        if self._active is None:
            embedder = self.factory(self.collection.model_name)
            self._active = (embedder, bind_model(self.conn, self.collection, embedder))
        return self._active

    def target(self) -> tuple[Embedder, int] | None:
        """The switch target's embedder and id; None without a switch, or when the target
        cannot be used by this process (:attr:`target_error` says why)."""
        if self.switch_model is None or self.target_error is not None:
            return None
        if self._target is None:
            try:
                embedder = self.factory(self.switch_model)
                model_id = bind_switch_model(
                    self.conn, self.collection, self.switch_model, embedder
                )
                self._target = (embedder, model_id)
            except EmbedplatError as exc:
                self.target_error = one_line_error(exc)
                log.warning(
                    "the switch target %s of collection %r cannot be used here: %s",
                    self.switch_model,
                    self.collection.name,
                    self.target_error,
                )
                return None
        return self._target


def bind_switch_model(
    conn: Connection, collection: CollectionInfo, name: str, embedder: Embedder
) -> int:
    """Bind the collection's switch to ``name``, loaded as ``embedder`` (the first process that
    loads it does), or refuse when the switch was started with other files of that name."""
    model_id = register_model(conn, embedder)
    row = conn.execute(
        "UPDATE embedplat.collections SET backfill_model_id = coalesce(backfill_model_id, %s) "
        "WHERE id = %s AND switch_model_name = %s RETURNING backfill_model_id",
        (model_id, collection.id, name),
    ).fetchone()
    if row is None:
        raise ModelMismatchError(f"collection {collection.name!r} is no longer switching to {name}")
    if int(row[0]) != model_id:
        bound = conn.execute(
            "SELECT fingerprint FROM embedplat.embedding_models WHERE id = %s", (int(row[0]),)
        ).fetchone()
        raise ModelMismatchError(
            f"the switch of collection {collection.name!r} to {embedder.name} back-fills "
            f"with the model of fingerprint {str(bound[0] if bound else '?')[:12]}, but the "
            f"files loaded here have fingerprint {embedder.fingerprint[:12]}; vectors of two "
            "models are never mixed: restore those files here, or cancel the switch"
        )
    return model_id


def _embed_and_store(
    conn: Connection,
    claimed: Sequence[ClaimedChunk],
    embedder: Embedder,
    model_id: int,
    options: SyncOptions,
    report: SyncReport,
    *,
    for_switch: bool,
) -> None:
    ok, failed = embed_isolating_failures(embedder, claimed)
    if ok:
        stored = store_vectors(
            conn,
            model_id,
            options.worker_id,
            [c for c, _ in ok],
            np.stack([v for _, v in ok]).astype(np.float32, copy=False),
            for_switch=for_switch,
        )
        if for_switch:
            report.switch_chunks_embedded += stored
        else:
            report.chunks_embedded += stored
        report.chunks_discarded += len(ok) - stored
    for chunk, exc in failed:
        log.warning("embedding chunk %s failed: %s", chunk.chunk_id, exc)
        state = record_failure(conn, chunk, exc, options)
        report.chunks_failed += 1
        if state == "failed":
            report.chunks_parked += 1


def embed_round(
    conn: Connection,
    models: CollectionModels,
    options: SyncOptions,
    report: SyncReport,
) -> int:
    """Claim, embed and store one round of chunks; returns how many were claimed.

    The active model's work comes first: edits are searchable soonest. During a switch it
    takes at most all but one batch of the round, and the target's back-fill fills the rest,
    so neither starves the other.
    """
    limit = options.batch_size * options.claim_factor
    target = models.target()
    share = limit - options.batch_size if target is not None else limit
    cid, lease, worker = models.collection.id, options.lease_seconds, options.worker_id
    claimed = claim_chunks(conn, cid, limit=max(share, 1), lease_seconds=lease, worker_id=worker)
    backfill: list[ClaimedChunk] = []
    if target is not None:
        backfill = claim_chunks(
            conn,
            cid,
            limit=limit - len(claimed),
            lease_seconds=lease,
            worker_id=worker,
            for_switch=True,
        )
    if claimed:
        embedder, model_id = models.active()
        _embed_and_store(conn, claimed, embedder, model_id, options, report, for_switch=False)
    if backfill and target is not None:
        _embed_and_store(conn, backfill, target[0], target[1], options, report, for_switch=True)
    return len(claimed) + len(backfill)


# -- lease liveness ----------------------------------------------------------------------------


def hold_lease_liveness(conn: Connection, worker_id: str) -> None:
    """Mark ``worker_id`` alive for as long as ``conn`` stays open (see sql/work.v2.sql).

    A session advisory lock: re-entrant, and released by the server when the connection ends,
    however the process ends.
    """
    conn.execute(
        "SELECT pg_advisory_lock(%s::int4, hashtext(%s))", (int(LockKey.LEASE_HOLDER), worker_id)
    )


def release_leases(conn: Connection, worker_id: str) -> int:
    """Hand back every lease ``worker_id`` holds; returns how many. Never raises.

    Called on the way out, when the connection itself may be what failed; the liveness lock
    (gone with a broken connection) frees the leases then.
    """
    try:
        with conn.transaction():
            cur = conn.execute(
                "UPDATE embedplat.embedding_queue SET leased_until = NULL, leased_by = NULL "
                "WHERE leased_by = %s",
                (worker_id,),
            )
            released = max(cur.rowcount, 0)
        conn.execute(
            "SELECT pg_advisory_unlock(%s::int4, hashtext(%s))",
            (int(LockKey.LEASE_HOLDER), worker_id),
        )
        return released
    except psycopg.Error as exc:
        log.warning("could not release the leases of %s: %s", worker_id, exc)
        return 0


def lease_holders(conn: Connection, collection_id: int | None = None) -> list[LeaseHolder]:
    """Processes holding unexpired leases (of one collection, or of all)."""
    rows = conn.execute(
        "SELECT c.name, h.holder, h.chunks, h.leased_until, h.alive "
        "FROM embedplat.lease_holders h JOIN embedplat.collections c ON c.id = h.collection_id "
        "WHERE %(c)s::bigint IS NULL OR h.collection_id = %(c)s ORDER BY c.name, h.holder",
        {"c": collection_id},
    ).fetchall()
    return [LeaseHolder(str(r[0]), str(r[1]), int(r[2]), r[3], bool(r[4])) for r in rows]


# -- the loop ----------------------------------------------------------------------------------


def pending_counts(conn: Connection, collection_id: int) -> tuple[int, int]:
    """(stale records, pending chunks) of a collection."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM embedplat.stale_records WHERE collection_id = %(c)s),"
        "       (SELECT count(*) FROM embedplat.pending_work WHERE collection_id = %(c)s)",
        {"c": collection_id},
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def has_queued_keys(conn: Connection, collection_id: int) -> bool:
    """Whether bulk statements on the collection's attached table queued keys to drain."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM embedplat.attach_pending WHERE collection_id = %s)",
        (collection_id,),
    ).fetchone()
    return bool(row and row[0])


def _build_index(
    connect: Callable[[], Connection],
    collection: CollectionInfo,
    model_id: int,
    dimensions: int,
    report: SyncReport,
) -> None:
    """Build the collection's missing ANN index, or note why this role cannot."""
    built = ensure_ann_index(connect, collection, model_id, dimensions, notes=report.notes)
    if built:
        report.indexes_built.append(built)


def sync_collection(
    connect: Callable[[], Connection],
    collection_name: str,
    embedder_factory: EmbedderFactory,
    options: SyncOptions | None = None,
    progress: Progress | None = None,
) -> SyncReport:
    """Chunk and embed everything stale in one collection (or ``max_rounds`` rounds of it)."""
    options = options or SyncOptions()
    progress = progress or Progress()
    report = SyncReport()
    started = time.perf_counter()
    with connect() as conn:
        conn.autocommit = True
        collection = get_collection(conn, collection_name)
        # Vectors of models an earlier switch retired, once no search can be reading them.
        report.retired_vectors_deleted += purge_retired(conn, collection.id)
        if has_queued_keys(conn, collection.id):
            # Records of rows written by bulk statements first: they may be stale records.
            report.attached_rows_drained += drain(connect, collection.name).rows_read
        stale_records, pending_chunks = pending_counts(conn, collection.id)
        progress.start(collection.name, stale_records, pending_chunks)
        if stale_records or pending_chunks:
            models = CollectionModels(conn, collection, embedder_factory)
            models.active()  # a model mismatch is refused before anything is claimed
            hold_lease_liveness(conn, options.worker_id)
            try:
                rounds = 0
                while options.max_rounds is None or rounds < options.max_rounds:
                    chunking = chunk_stale_records(
                        conn,
                        models.collection,
                        models.active()[0],
                        limit=options.record_batch,
                        max_attempts=options.max_attempts,
                    )
                    report.records_chunked += chunking.chunked
                    report.records_failed += chunking.failed
                    report.records_parked += chunking.parked
                    if chunking.taken:
                        progress.chunked(chunking.taken, chunking.queued)
                    claimed = embed_round(conn, models, options, report)
                    if claimed:
                        progress.embedded(claimed)
                    if not chunking.taken and not claimed:
                        break
                    rounds += 1
                    models.refresh()  # a swap or a cancel by another process
            finally:
                # A clean exit (done, Ctrl-C, an exception) hands its leases back at once; a
                # killed process's liveness lock goes with its connection, which frees them too.
                release_leases(conn, options.worker_id)
            if models.target_error is not None:
                report.notes.append(
                    f"collection {collection.name!r} is switching to {models.switch_model}, "
                    f"which this process cannot use ({models.target_error}); its back-fill "
                    "is left to processes that can"
                )
            stale_records, pending_chunks = pending_counts(conn, collection.id)
            report.more_work = (stale_records + pending_chunks) > 0
            report.leased_elsewhere += [
                h for h in lease_holders(conn, collection.id) if h.holder != options.worker_id
            ]
        # The ANN index of the active model (its dimensions are in the database: no model
        # load), once everything is embedded.
        index_for = None if report.more_work else active_model(conn, collection)
        finish = switch_ready(conn, collection.id)
    if options.build_index and index_for is not None:
        _build_index(connect, collection, index_for[0], index_for[1], report)
    if finish:
        state = complete_switch(
            connect, collection, notes=report.notes, build_index=options.build_index
        )
        if state == "switched":
            report.switched.append(collection.name)
            if options.wait_retired:
                with connect() as conn:
                    conn.autocommit = True
                    report.retired_vectors_deleted += wait_and_purge(conn, collection.id)
        elif state in ("incomplete", "unbound"):
            report.more_work = True
        elif state == "index_missing":
            report.switches_waiting_for_index.append(collection.name)
    report.seconds = time.perf_counter() - started
    return report


def switch_ready(conn: Connection, collection_id: int) -> bool:
    """Whether the collection is switching models and none of the back-fill is queued (so
    the switch may be complete: :func:`~embedplat.switch.complete_switch` checks)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM embedplat.collections WHERE id = %(c)s "
        "AND switch_model_name IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM "
        "embedplat.pending_work WHERE collection_id = %(c)s AND for_switch)",
        {"c": collection_id},
    ).fetchone()
    return bool(row and row[0])


def sync(
    connect: Callable[[], Connection],
    embedder_factory: EmbedderFactory,
    collection: str | None = None,
    options: SyncOptions | None = None,
    progress: Progress | None = None,
) -> SyncReport:
    """Sync one collection, or every collection when ``collection`` is None.

    A sync of every collection carries on past a collection that fails (an unknown model, a
    model mismatch, a bug) and lists it in ``failures``; a named collection's error is raised.
    Losing the database is raised at once either way: every later collection would fail too.
    """
    started = time.perf_counter()
    if collection is None:
        with connect() as conn:
            names = [c.name for c in list_collections(conn)]
    else:
        names = [collection]
    total = SyncReport()
    for name in names:
        if collection is not None:
            total.merge(sync_collection(connect, name, embedder_factory, options, progress))
            continue
        try:
            total.merge(sync_collection(connect, name, embedder_factory, options, progress))
        except (psycopg.OperationalError, DatabaseUnavailableError):
            raise
        except Exception as exc:  # isolate this collection; the report says what went wrong
            log.warning("sync of collection %r failed: %s", name, exc)
            total.failures.append(CollectionFailure(name, one_line_error(exc)))
    total.seconds = time.perf_counter() - started
    return total


def one_line_error(exc: BaseException) -> str:
    """An error as one line: embedplat's own messages as they are, others with their type."""
    text = str(exc) if isinstance(exc, EmbedplatError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:ERROR_TEXT_LIMIT]


# -- operator actions --------------------------------------------------------------------------


def retry_failed(conn: Connection, collection_id: int | None = None) -> int:
    """Re-queue parked work (chunks and records); returns how many items were re-queued."""
    with conn.transaction():
        chunks = conn.execute(
            "UPDATE embedplat.embedding_queue SET state = 'pending', attempts = 0, "
            "available_at = now(), last_error = NULL, leased_until = NULL, leased_by = NULL "
            "WHERE state = 'failed' AND (%(c)s::int IS NULL OR collection_id = %(c)s)",
            {"c": collection_id},
        ).rowcount
        records = conn.execute(
            "UPDATE embedplat.records SET chunk_error = NULL, chunk_attempts = 0 "
            "WHERE chunk_error IS NOT NULL AND (%(c)s::int IS NULL OR collection_id = %(c)s)",
            {"c": collection_id},
        ).rowcount
    return max(chunks, 0) + max(records, 0)


@dataclass
class ReconcileReport:
    """Drift found and fixed by a reconcile pass."""

    records_rechunked: int = 0
    chunks_requeued: int = 0
    stale_vectors_removed: int = 0
    foreign_vectors_removed: int = 0
    queue_hashes_fixed: int = 0
    # Attached collections: records re-derived from the app's table (see embedplat.attach).
    attached_records_inserted: int = 0
    attached_records_updated: int = 0
    attached_records_deleted: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def reconcile(conn: Connection, collection_id: int | None = None) -> ReconcileReport:
    """Find drift the fast path cannot see and repair it, in one transaction.

    * records marked chunked whose chunks no longer match their content (chunk rows edited or
      deleted by hand, or a record with text but no chunks) are marked for re-chunking;
    * vectors whose text hash no longer equals their chunk's, or that belong to a model the
      collection does not use (neither active, its switch's target, kept by a switch for a
      rollback, nor retired and waiting for its purge), are deleted;
    * queue rows carrying an outdated text hash are corrected;
    * chunks with neither a current vector nor queued work are queued (for the switch target
      too while the collection switches models).
    """
    report = ReconcileReport()
    params = {"c": collection_id}
    scope = "(%(c)s::int IS NULL OR {alias}.collection_id = %(c)s)"
    with conn.transaction():
        report.records_rechunked = conn.execute(
            f"""
            UPDATE embedplat.records r SET chunked_hash = NULL
            WHERE {scope.format(alias="r")} AND r.chunked_hash = r.content_hash AND (
                  (btrim(r.content) <> '' AND NOT EXISTS (
                      SELECT 1 FROM embedplat.chunks ch WHERE ch.record_id = r.id))
               OR EXISTS (
                      SELECT 1 FROM embedplat.chunks ch WHERE ch.record_id = r.id
                      AND substr(r.content, ch.char_start + 1, ch.char_end - ch.char_start)
                          IS DISTINCT FROM ch.content))
            """,
            params,
        ).rowcount
        report.stale_vectors_removed = conn.execute(
            f"""
            DELETE FROM embedplat.embeddings e USING embedplat.chunks ch
            WHERE ch.id = e.chunk_id AND e.text_hash <> ch.text_hash AND {scope.format(alias="e")}
            """,
            params,
        ).rowcount
        report.foreign_vectors_removed = conn.execute(
            f"""
            DELETE FROM embedplat.embeddings e USING embedplat.collections col
            WHERE col.id = e.collection_id AND {scope.format(alias="e")}
              AND e.model_id IS DISTINCT FROM col.active_model_id
              AND e.model_id IS DISTINCT FROM col.backfill_model_id
              AND e.model_id IS DISTINCT FROM col.kept_model_id
              AND col.active_model_id IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM embedplat.retired_models rm
                              WHERE rm.collection_id = col.id AND rm.model_id = e.model_id)
            """,
            params,
        ).rowcount
        report.queue_hashes_fixed = conn.execute(
            f"""
            UPDATE embedplat.embedding_queue q SET text_hash = ch.text_hash
            FROM embedplat.chunks ch
            WHERE ch.id = q.chunk_id AND q.text_hash <> ch.text_hash AND {scope.format(alias="q")}
            """,
            params,
        ).rowcount
        report.chunks_requeued = conn.execute(
            f"""
            INSERT INTO embedplat.embedding_queue (chunk_id, collection_id, text_hash, for_switch)
            SELECT ch.id, ch.collection_id, ch.text_hash, kind.for_switch
            FROM embedplat.chunks ch
            JOIN embedplat.collections col ON col.id = ch.collection_id
            CROSS JOIN LATERAL (VALUES (false, col.active_model_id),
                                       (true, col.backfill_model_id)) AS kind(for_switch, model_id)
            WHERE {scope.format(alias="ch")}
              AND (NOT kind.for_switch OR col.switch_model_name IS NOT NULL)
              AND NOT EXISTS (SELECT 1 FROM embedplat.embeddings e
                              WHERE e.chunk_id = ch.id AND e.model_id = kind.model_id
                                AND e.text_hash = ch.text_hash)
            ON CONFLICT (chunk_id, for_switch) DO NOTHING
            """,
            params,
        ).rowcount
    return report
