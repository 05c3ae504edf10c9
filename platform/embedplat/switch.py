"""The model switch: a collection moves to another model with no downtime (docs/models.md).

1. :func:`start_switch` (``embedplat model switch COLLECTION MODEL``, SQL
   ``embedplat.model_switch``) records the target and queues every chunk that has no vector of
   it (vectors kept by an earlier switch are reused where the chunk's text is unchanged).
2. Every sync (CLI or Celery) embeds that back-fill next to its normal work: a round claims the
   active model's work first (edits made meanwhile), then fills up with back-fill. Chunks cut
   during the switch are queued for both models. Searches keep reading the active model only.
3. When nothing is left, the sync that finishes builds the target's ANN index (concurrently)
   and calls :func:`complete_switch` (SQL ``embedplat.model_switch_complete``): one
   transaction checks, under the collection's row lock, that every chunk has its vector, and
   makes the target active.
4. The old model's vectors (unless kept with ``keep_old``) are deleted after
   :data:`RETIRE_GRACE_SECONDS`, when no search that read the collection before the swap can
   still be reading them (:func:`purge_retired`).

:func:`cancel_switch` abandons a switch and deletes its vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from embedplat.collections import CollectionInfo
from embedplat.embedders import Embedder
from embedplat.errors import InvalidInputError, server_errors
from embedplat.indexes import (
    can_build_indexes,
    collection_index_names,
    drop_index_concurrently,
    ensure_ann_index,
    index_model_id,
)

Connection = psycopg.Connection[Any]

RETIRE_GRACE_SECONDS = 15.0
"""How long a retired model's vectors stay after the swap (SQL ``embedplat.retire_grace()``)."""

PURGE_BATCH = 10_000
"""Vectors of a retired model deleted per transaction."""


@dataclass(frozen=True, slots=True)
class SwitchStart:
    """What :func:`start_switch` did. ``state``: ``started``, ``resumed`` (the same switch was
    running) or ``switched`` (nothing was embedded yet: the collection uses the model now)."""

    collection: str
    from_model: str
    to_model: str
    state: str
    chunks: int
    chunks_reused: int
    chunks_queued: int

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "from_model": self.from_model,
            "to_model": self.to_model,
            "state": self.state,
            "chunks": self.chunks,
            "chunks_reused": self.chunks_reused,
            "chunks_queued": self.chunks_queued,
        }


@dataclass(frozen=True, slots=True)
class SwitchCancel:
    """What :func:`cancel_switch` deleted."""

    collection: str
    model: str
    vectors_deleted: int
    queued_deleted: int
    indexes_dropped: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "model": self.model,
            "vectors_deleted": self.vectors_deleted,
            "queued_deleted": self.queued_deleted,
            "indexes_dropped": list(self.indexes_dropped),
        }


@dataclass(frozen=True, slots=True)
class SwitchProgress:
    """A switch in progress (a row of ``embedplat.model_switches``)."""

    collection: str
    from_model: str
    to_model: str
    to_model_id: int | None
    started_at: datetime
    keep_old: bool
    chunks: int
    chunks_done: int
    chunks_reused: int
    chunks_queued: int
    chunks_failed: int
    checked_at: datetime

    @property
    def elapsed_seconds(self) -> float:
        return max(0.0, (self.checked_at - self.started_at).total_seconds())

    @property
    def rate(self) -> float | None:
        """Chunks embedded per second since the switch started (reused ones not counted)."""
        embedded = self.chunks_done - self.chunks_reused
        if embedded <= 0 or self.elapsed_seconds <= 0:
            return None
        return embedded / self.elapsed_seconds

    @property
    def eta_seconds(self) -> float | None:
        """Seconds until every chunk has its vector, at :attr:`rate` (None: no rate yet)."""
        left = max(0, self.chunks - self.chunks_done)
        if left == 0:
            return 0.0
        rate = self.rate
        return None if rate is None else left / rate

    def to_json(self) -> dict[str, Any]:
        rate, eta = self.rate, self.eta_seconds
        return {
            "from_model": self.from_model,
            "to_model": self.to_model,
            "started_at": self.started_at.isoformat(),
            "keep_old": self.keep_old,
            "chunks": self.chunks,
            "chunks_done": self.chunks_done,
            "chunks_reused": self.chunks_reused,
            "chunks_queued": self.chunks_queued,
            "chunks_failed": self.chunks_failed,
            "rate_per_second": None if rate is None else round(rate, 2),
            "eta_seconds": None if eta is None else round(eta, 1),
        }


def start_switch(
    conn: Connection,
    collection: str,
    embedder: Embedder,
    *,
    keep_old: bool = False,
    reuse: bool = False,
) -> SwitchStart:
    """Start switching ``collection`` to ``embedder``'s model (loaded: a model that cannot be
    loaded never gets here). ``keep_old``: keep the active model's vectors after the swap, for
    a rollback. ``reuse``: the caller expects vectors of this model kept by an earlier switch;
    refused when there are none (so that a rollback never turns into a full back-fill by
    mistake). Starting the same switch again resumes it."""
    from embedplat.sync import register_model  # the sync engine imports this module

    with conn.transaction():
        model_id = register_model(conn, embedder)
        if reuse:
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM embedplat.embeddings e "
                "JOIN embedplat.collections c ON c.id = e.collection_id "
                "WHERE c.name = %s AND e.model_id = %s)",
                (collection, model_id),
            ).fetchone()
            if not (row and row[0]):
                raise InvalidInputError(
                    f"collection {collection!r} has no kept vectors of {embedder.name} "
                    f"(fingerprint {embedder.fingerprint[:12]}) to reuse; switch without "
                    "--reuse to back-fill every chunk"
                )
        with server_errors(), conn.cursor(row_factory=dict_row) as cur:
            out = cur.execute(
                "SELECT * FROM embedplat.model_switch(%s, %s, keep_old => %s, model_id => %s)",
                (collection, embedder.name, keep_old, model_id),
            ).fetchone()
    assert out is not None
    return SwitchStart(
        collection=out["collection_name"],
        from_model=out["from_model"],
        to_model=out["to_model"],
        state=out["state"],
        chunks=int(out["chunks"]),
        chunks_reused=int(out["chunks_reused"]),
        chunks_queued=int(out["chunks_queued"]),
    )


def cancel_switch(connect: Callable[[], Connection], collection: str) -> SwitchCancel:
    """Abandon ``collection``'s switch: its queued back-fill and vectors are deleted (in one
    transaction), then the target's ANN index, if one was built already, is dropped."""
    with connect() as conn:
        conn.autocommit = True
        with server_errors(), conn.cursor(row_factory=dict_row) as cur:
            out = cur.execute(
                "SELECT * FROM embedplat.model_switch_cancel(%s)", (collection,)
            ).fetchone()
        assert out is not None
        found = conn.execute(
            "SELECT id FROM embedplat.collections WHERE name = %s", (collection,)
        ).fetchone()
        dropped = drop_unused_indexes(conn, int(found[0])) if found else []
    return SwitchCancel(
        collection=out["collection_name"],
        model=out["model"],
        vectors_deleted=int(out["vectors_deleted"]),
        queued_deleted=int(out["queued_deleted"]),
        indexes_dropped=tuple(dropped),
    )


def switch_progress(conn: Connection, collection: str | None = None) -> list[SwitchProgress]:
    """The switches in progress (of one collection, or all)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM embedplat.model_switches "
            "WHERE %(c)s::text IS NULL OR collection = %(c)s ORDER BY collection",
            {"c": collection},
        ).fetchall()
    return [SwitchProgress(**row) for row in rows]


def complete_switch(
    connect: Callable[[], Connection],
    collection: CollectionInfo,
    *,
    notes: list[str] | None = None,
    build_index: bool = True,
) -> str:
    """End ``collection``'s switch if its back-fill is complete: build the target's ANN index
    (concurrently; not with ``build_index=False``, when the swap waits for an index build
    wherever the active model has an index), then swap in one
    transaction. Returns the state: ``switched``, ``incomplete`` (chunks were missing: they are
    queued), ``unbound`` (no process has loaded the target yet), ``index_missing`` (this role
    may not build the index; a note says what to run) or ``none`` (no switch)."""
    with connect() as conn:
        conn.autocommit = True
        row = conn.execute(
            "SELECT c.backfill_model_id, m.dimensions, "
            "embedplat.switch_missing_chunks(c.id, c.backfill_model_id) "
            "FROM embedplat.collections c "
            "LEFT JOIN embedplat.embedding_models m ON m.id = c.backfill_model_id "
            "WHERE c.id = %s AND c.switch_model_name IS NOT NULL",
            (collection.id,),
        ).fetchone()
    if row is None:
        return "none"
    target_id, dimensions, missing = row
    if build_index and target_id is not None and not missing:
        ensure_ann_index(connect, collection, int(target_id), int(dimensions), notes=notes)
    with connect() as conn:
        conn.autocommit = True
        with server_errors():
            out = conn.execute(
                "SELECT state, model, chunks_missing FROM embedplat.model_switch_complete(%s)",
                (collection.name,),
            ).fetchone()
    assert out is not None
    state = str(out[0])
    if state == "index_missing" and notes is not None:
        why = "this sync builds no index" if not build_index else "this role may not build it"
        notes.append(
            f"the switch of collection {collection.name!r} to {out[1]} is back-filled, but its "
            f"ANN index is missing and {why}: run `embedplat sync {collection.name}` as the "
            "schema owner to build it and swap"
        )
    return state


def purge_retired(conn: Connection, collection_id: int) -> int:
    """Delete the vectors of the models a switch retired in the collection (those past the
    grace period), one transaction per :data:`PURGE_BATCH`, then drop the ANN indexes no model
    of the collection uses any more (when this role may). Returns the vectors deleted."""
    due = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM embedplat.retired_models WHERE collection_id = %s "
        "AND retired_at <= now() - embedplat.retire_grace())",
        (collection_id,),
    ).fetchone()
    if not (due and due[0]):
        return 0
    deleted = 0
    while True:
        row = conn.execute(
            "SELECT embedplat.purge_retired_vectors(%s, %s)", (collection_id, PURGE_BATCH)
        ).fetchone()
        n = int(row[0]) if row else 0
        deleted += n
        if n == 0:
            break
    if deleted:
        drop_unused_indexes(conn, collection_id)
    return deleted


def retired_wait_seconds(conn: Connection, collection_id: int) -> float | None:
    """Seconds until the collection's retired vectors may be purged (None: none retired)."""
    row = conn.execute(
        "SELECT extract(epoch FROM max(retired_at) + embedplat.retire_grace() - now()) "
        "FROM embedplat.retired_models WHERE collection_id = %s",
        (collection_id,),
    ).fetchone()
    return None if row is None or row[0] is None else max(0.0, float(row[0]))


def wait_and_purge(
    conn: Connection, collection_id: int, *, sleep: Callable[[float], None] = time.sleep
) -> int:
    """Wait out the grace period of the collection's retired models, then purge them."""
    wait = retired_wait_seconds(conn, collection_id)
    if wait is None:
        return 0
    if wait > 0:
        sleep(wait + 0.05)
    return purge_retired(conn, collection_id)


def drop_unused_indexes(conn: Connection, collection_id: int) -> list[str]:
    """Drop, concurrently, the ANN indexes of the collection whose model it no longer uses
    (neither active, switch target, kept, nor retired and waiting for its purge). Nothing when
    this role may not drop indexes. ``conn`` must be in autocommit."""
    if not can_build_indexes(conn):
        return []
    row = conn.execute(
        "SELECT c.id, array_remove(ARRAY[c.active_model_id, c.backfill_model_id, "
        "c.kept_model_id], NULL) || coalesce((SELECT array_agg(r.model_id) FROM "
        "embedplat.retired_models r WHERE r.collection_id = c.id), '{}') "
        "FROM embedplat.collections c WHERE c.id = %s",
        (collection_id,),
    ).fetchone()
    if row is None:
        return []
    used = {int(m) for m in row[1]}
    dropped: list[str] = []
    for name in collection_index_names(conn, collection_id):
        model_id = index_model_id(name, collection_id)
        # None: a rebuild in progress (`_new`), which `embedplat index` owns.
        if model_id is None or model_id in used:
            continue
        drop_index_concurrently(conn, name)
        dropped.append(name)
    return dropped
