"""Celery tasks: thin adapters over :mod:`embedplat.sync`.

* ``embedplat.sync_collection(name)`` runs a bounded batch of the sync engine on one collection
  (``EMBEDPLAT_TASK_ROUNDS`` claim/embed rounds) and, while work remains, sends follow-up tasks,
  so any number of workers drain a backlog in parallel.
* ``embedplat.sweep()`` sends a sync task to every collection with stale work that no task is
  working on (beat's polling fallback behind the NOTIFY listener).
* ``embedplat.reconcile()`` repairs drift; ``embedplat.index_upkeep([name])`` builds missing
  HNSW indexes, and ends a model switch whose back-fill is done (the sync tasks embed the
  back-fill but build no index; the swap waits for the target's).

Messages carry a collection name, never row ids: the database decides what is stale and hands it
out with ``FOR UPDATE SKIP LOCKED`` claims, so duplicated, lost or reordered messages cost at
most a no-op task.

**Chains.** A sync task that leaves claimable work behind sends one follow-up (its chain goes
on), plus one more while the broker queue is empty and the collection has work for more tasks:
chains double until every worker is busy, with no need to know how many workers there are.

**Task slots.** A sync task holds one of ``EMBEDPLAT_MAX_PARALLEL_TASKS`` session advisory locks
of its collection while it runs. That caps how many tasks work on one collection at once
(a task finding every slot taken ends its chain), and tells the planner and the sweep how many
tasks are alive right now: a killed worker's connection closes and its slot frees itself,
unlike a lease, which only expires.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol, cast

import psycopg
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import ChannelError

from embedplat.collections import list_collections
from embedplat.db.connection import connect, resolve_database_url
from embedplat.db.locks import LockKey
from embedplat.embedders import Embedder, load_embedder
from embedplat.errors import CollectionNotFoundError, DatabaseUnavailableError
from embedplat.indexes import ensure_ann_index
from embedplat.switch import complete_switch
from embedplat.sync import (
    SyncOptions,
    SyncReport,
    reconcile,
    switch_ready,
    sync_collection,
)
from embedplat_workers.app import (
    LONG_SOFT_TIME_LIMIT_S,
    LONG_TIME_LIMIT_S,
    QUEUE,
    app,
    worker_settings,
)
from embedplat_workers.beat import INDEX_UPKEEP_TASK, RECONCILE_TASK, SWEEP_TASK, SYNC_TASK
from embedplat_workers.settings import WorkerSettings

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]

# Database trouble (server restarting, connection dropped, deadlock/serialization victim): the
# task is retried with exponential backoff; nothing it did is half-written, because every write
# of the sync engine is its own short transaction and every result is compare-and-set.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    DatabaseUnavailableError,
)
# First key of the task-slot advisory locks (second key: the collection id); see db/locks.py.
SLOT_LOCK_BASE = int(LockKey.TASK_SLOT_BASE)
# Upper bound of a delayed follow-up's countdown; far below the broker's visibility timeout.
MAX_FOLLOW_UP_DELAY_S = 600.0
# A follow-up no worker started within this time is dropped (see send_sync).
FOLLOW_UP_EXPIRES_S = 600.0


# -- runtime: resolved once per process ------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """What the tasks of one worker process share: settings and the database URL."""

    settings: WorkerSettings
    database_url: str

    def connect(self) -> Connection:
        """A new connection (the sync engine opens and closes its own)."""
        return connect(self.database_url)

    def sync_options(self) -> SyncOptions:
        """One bounded batch per task; the index is built by index_upkeep, not inside a batch."""
        base = self.settings.base
        return SyncOptions(
            batch_size=base.batch_size,
            lease_seconds=base.lease_seconds,
            max_attempts=base.max_attempts,
            max_rounds=self.settings.task_rounds,
            build_index=False,
        )

    @property
    def chunks_per_task(self) -> int:
        """Roughly how many chunks one sync task handles (for planning parallelism)."""
        options = self.sync_options()
        return options.batch_size * options.claim_factor * self.settings.task_rounds


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """This process's :class:`Runtime`, built on first use from the environment.

    The database URL is ``EMBEDPLAT_DATABASE_URL``, else the embedded server's (started if
    needed), exactly as the CLI resolves it.
    """
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            url = resolve_database_url(worker_settings.base)
            _runtime = Runtime(worker_settings, url)
        return _runtime


# -- the embedder: loaded once per worker process -------------------------------------------


def embedder_for(model: str) -> Embedder:
    """The embedder of ``model``, loaded on first use and kept for the life of the process."""
    settings = runtime().settings
    # load_embedder caches per process, so the model is loaded by the first task only.
    return load_embedder(model, device=settings.base.device, batch_size=settings.base.batch_size)


# -- planning: who continues a collection, and how many ---------------------------------------


@dataclass(frozen=True, slots=True)
class CollectionWork:
    """What is left to do in one collection, and how many sync tasks work on it now.

    Counts are capped (see :func:`collection_work`): they answer "is there work, and enough
    for more tasks", not "how much", so they stay cheap on a backlog of millions.
    """

    collection_id: int
    name: str
    stale_records: int
    claimable_chunks: int
    running_tasks: int
    # Queue rows of keys written by bulk statements on an attached table (up to 1,000 each).
    queued_keys: int = 0

    @property
    def claimable(self) -> int:
        """Units of work a task could start on right now."""
        return self.stale_records + self.claimable_chunks + self.queued_keys


_COLLECTION_WORK = """
SELECT c.id,
       c.name,
       (SELECT count(*) FROM (
            SELECT 1 FROM embedplat.stale_records r
            WHERE r.collection_id = c.id
            LIMIT %(cap)s) s) AS stale_records,
       (SELECT count(*) FROM (
            SELECT 1 FROM embedplat.claimable_work q
            WHERE q.collection_id = c.id
            LIMIT %(cap)s) s) AS claimable_chunks,
       (SELECT count(*) FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.objid::int8 = c.id
           AND l.classid::int8 >= %(base)s
           AND l.classid::int8 < %(base)s + %(slots)s) AS running_tasks,
       (SELECT count(*) FROM (
            SELECT 1 FROM embedplat.attach_pending p
            WHERE p.collection_id = c.id
            LIMIT %(cap)s) s) AS queued_keys
FROM embedplat.collections c
WHERE %(name)s::text IS NULL OR c.name = %(name)s
ORDER BY c.name
"""

# Seconds until the first pending chunk becomes claimable (its backoff ends or its lease
# expires); looks at a bounded sample, since this only sets a wake-up time.
_NEXT_READY = """
SELECT extract(epoch FROM min(greatest(q.available_at, coalesce(q.leased_until, q.available_at)))
                          - now())
FROM (SELECT available_at, leased_until FROM embedplat.embedding_queue
      WHERE collection_id = %s AND state = 'pending' LIMIT 10000) q
"""


def collection_work(
    conn: Connection, *, cap: int, max_parallel: int, name: str | None = None
) -> list[CollectionWork]:
    """Work and running tasks of every collection (or of the one named), in one query."""
    rows = conn.execute(
        _COLLECTION_WORK,
        {"cap": cap, "base": SLOT_LOCK_BASE, "slots": max_parallel, "name": name},
    ).fetchall()
    return [
        CollectionWork(int(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]))
        for r in rows
    ]


@contextmanager
def task_slot(rt: Runtime, collection: str) -> Iterator[int | None]:
    """Hold one of the collection's task slots for the block (None when all are taken)."""
    with rt.connect() as conn:
        conn.autocommit = True
        row = conn.execute(
            "SELECT id FROM embedplat.collections WHERE name = %s", (collection,)
        ).fetchone()
        if row is None:
            raise CollectionNotFoundError(f"no collection named {collection!r}")
        collection_id = int(row[0])
        for slot in range(rt.settings.max_parallel_tasks):
            got = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (SLOT_LOCK_BASE + slot, collection_id)
            ).fetchone()
            if got and got[0]:
                try:
                    yield slot
                finally:
                    # Closing the connection would release it too; unlock explicitly so the
                    # planner, which runs right after, already sees the slot free.
                    if not conn.closed and not conn.broken:
                        conn.execute(
                            "SELECT pg_advisory_unlock(%s, %s)",
                            (SLOT_LOCK_BASE + slot, collection_id),
                        )
                return
        yield None


def broker_queue_idle() -> bool:
    """Whether no task message waits in the broker's queue, i.e. the workers keep up.

    Asked through kombu, so it works for Redis and RabbitMQ alike. When in doubt (broker
    unreachable), the answer is "not idle", which only means no extra task is sent.
    """
    try:
        with app.pool.acquire(block=True, timeout=5) as conn:
            channel = conn.channel()
            try:
                declared = channel.queue_declare(queue=QUEUE, passive=True)
            finally:
                with suppress(Exception):
                    channel.close()
        return int(declared.message_count) == 0
    except ChannelError:  # no such queue: Redis drops an empty list, so it is empty
        return True
    except Exception as exc:  # the broker's failure modes are open-ended
        log.debug("could not read the queue length: %s", exc)
        return False


@dataclass(frozen=True)
class FollowUp:
    """Sync tasks to send for a collection: ``count`` of them, after ``countdown`` seconds."""

    collection: str
    count: int
    countdown: float = 0.0


def plan_follow_up(rt: Runtime, collection: str) -> FollowUp | None:
    """After a sync batch that left work behind: who continues, and when.

    * Claimable work left: one follow-up continues this chain. When the broker queue is empty
      (some worker may be idle) and fewer tasks run than the work and
      ``EMBEDPLAT_MAX_PARALLEL_TASKS`` allow, one more is sent: chains double until every
      worker is busy, and then stop growing, because a waiting message means no idle worker.
    * Nothing claimable, but tasks of this collection still running: they continue it.
    * Nothing claimable and nothing running, yet work pending (in backoff after a failure, or
      leased by a worker that died): one follow-up when the first of it becomes claimable.

    Runs after the task gave its slot back, so of two tasks finishing at the same moment at
    least one sees the other gone and continues.
    """
    settings = rt.settings
    with rt.connect() as conn:
        conn.autocommit = True
        found = collection_work(
            conn,
            cap=rt.chunks_per_task * settings.max_parallel_tasks,
            max_parallel=settings.max_parallel_tasks,
            name=collection,
        )
        if not found:
            return None
        work = found[0]
        if work.claimable:
            if work.running_tasks >= settings.max_parallel_tasks:
                return None  # every slot is busy: those tasks carry the collection on
            useful = min(
                math.ceil(work.claimable / rt.chunks_per_task), settings.max_parallel_tasks
            )
            count = 2 if useful - work.running_tasks >= 2 and broker_queue_idle() else 1
            return FollowUp(collection, count)
        if work.running_tasks:
            return None
        row = conn.execute(_NEXT_READY, (work.collection_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        delay = min(max(float(row[0]), 0.0) + 0.5, MAX_FOLLOW_UP_DELAY_S)
        return FollowUp(collection, 1, countdown=delay)


def run_sync_batch(collection: str) -> SyncReport | None:
    """One bounded batch of the sync engine on ``collection`` plus its follow-ups.

    Returns None when every task slot of the collection is taken (the running tasks carry on,
    and this chain ends: that is how surplus chains disappear).
    """
    rt = runtime()
    with task_slot(rt, collection) as slot:
        if slot is None:
            log.info("all task slots of %r are busy; leaving it to the running tasks", collection)
            return None
        report = sync_collection(rt.connect, collection, embedder_for, rt.sync_options())
    if report.more_work:
        follow_up = plan_follow_up(rt, collection)
        if follow_up is not None:
            send_sync(follow_up)
    elif report.chunks_embedded or report.switches_waiting_for_index:
        # The backlog is drained: build the ANN index if the collection has none yet. A task
        # of its own, because a first build may take far longer than a sync batch may.
        index_upkeep_task.delay(collection)
    return report


def send_sync(follow_up: FollowUp, expires_s: float = FOLLOW_UP_EXPIRES_S) -> None:
    """Send ``follow_up.count`` sync tasks for the collection.

    They expire when no worker started them within ``expires_s`` (after their countdown): the
    workers are then saturated, and the next sweep or notification starts the collection
    again. This bounds how many messages can pile up however the workers are sized.
    """
    for _ in range(follow_up.count):
        sync_collection_task.apply_async(
            args=[follow_up.collection],
            countdown=follow_up.countdown or None,
            expires=follow_up.countdown + expires_s,
        )


def run_sweep() -> dict[str, int]:
    """Send a sync task for every collection with claimable work and no running task.

    Collections with running tasks are left alone: their chains continue them. Returns
    {name: tasks sent}.
    """
    rt = runtime()
    settings = rt.settings
    with rt.connect() as conn:
        conn.autocommit = True
        works = collection_work(conn, cap=1, max_parallel=settings.max_parallel_tasks)
    sent: dict[str, int] = {}
    for work in works:
        if work.claimable and not work.running_tasks:
            # A sweep's task expires with the sweep interval, like the sweep itself.
            send_sync(
                FollowUp(work.name, 1), expires_s=settings.sweep_seconds or FOLLOW_UP_EXPIRES_S
            )
            sent[work.name] = 1
    return sent


def run_index_upkeep(collection: str | None = None) -> list[str]:
    """Build the HNSW index of every collection (or of one) whose active model has none; then
    end each model switch whose back-fill is done (its target's index is built first)."""
    rt = runtime()
    with rt.connect() as conn:
        conn.autocommit = True
        infos = {info.name: info for info in list_collections(conn)}
        rows = conn.execute(
            "SELECT c.name, m.id, m.dimensions FROM embedplat.collections c "
            "JOIN embedplat.embedding_models m ON m.id = c.active_model_id "
            "WHERE %(name)s::text IS NULL OR c.name = %(name)s ORDER BY c.name",
            {"name": collection},
        ).fetchall()
    built: list[str] = []
    for name, model_id, dimensions in rows:
        info = infos.get(str(name))
        if info is None:  # dropped meanwhile
            continue
        index = ensure_ann_index(rt.connect, info, int(model_id), int(dimensions))
        if index:
            log.info("built index %s for collection %r", index, name)
            built.append(index)
        with rt.connect() as conn:
            conn.autocommit = True
            ready = switch_ready(conn, info.id)
        if ready:
            notes: list[str] = []
            state = complete_switch(rt.connect, info, notes=notes)
            log.info("model switch of collection %r: %s", name, state)
            for note in notes:
                log.warning("%s", note)
    return built


def run_reconcile() -> dict[str, int]:
    """Repair drift in every collection; sweep at once when anything was requeued."""
    rt = runtime()
    with rt.connect() as conn:
        report = reconcile(conn, None)
    found = report.to_json()
    if found["records_rechunked"] or found["chunks_requeued"]:
        sweep_task.delay()
    return found


# -- Celery tasks ------------------------------------------------------------------------------


class TaskHandle(Protocol):
    """The part of a Celery task these modules use (Celery ships no type hints)."""

    name: str

    def delay(self, *args: Any, **kwargs: Any) -> Any: ...

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


def _task(**options: Any) -> Callable[[Callable[..., Any]], TaskHandle]:
    def register(fn: Callable[..., Any]) -> TaskHandle:
        return cast(TaskHandle, app.task(**options)(fn))

    return register


# Retried on database errors: 2 s, 4 s, ... capped at 60 s (full jitter), 12 times (about
# 8 minutes); after that the next sweep or notification starts over.
_RETRY_OPTIONS: dict[str, Any] = {
    "autoretry_for": DATABASE_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 12,
}


@_task(name=SYNC_TASK, **_RETRY_OPTIONS)
def sync_collection_task(collection: str) -> dict[str, Any] | None:
    """Chunk and embed one bounded batch of ``collection``; send follow-ups while work remains."""
    try:
        report = run_sync_batch(collection)
    except CollectionNotFoundError:
        log.info("collection %r no longer exists; nothing to do", collection)
        return None
    except SoftTimeLimitExceeded:
        # The batch ran too long (slow model, huge chunks): its claims stay leased and are
        # retried after the lease; hand the rest of the collection to a fresh task.
        log.warning(
            "sync batch of %r hit the soft time limit; continuing in a new task", collection
        )
        send_sync(FollowUp(collection, 1))
        return None
    return None if report is None else report.to_json()


@_task(name=SWEEP_TASK, **{**_RETRY_OPTIONS, "max_retries": 3})
def sweep_task() -> dict[str, int]:
    """Send sync tasks for every collection with stale work (beat's polling fallback)."""
    return run_sweep()


# Long tasks acknowledge on receipt (acks_late=False): they may run longer than the broker's
# visibility timeout, and a lost one simply runs again at its next scheduled time.
_LONG_OPTIONS: dict[str, Any] = {
    **_RETRY_OPTIONS,
    "max_retries": 3,
    "acks_late": False,
    "soft_time_limit": LONG_SOFT_TIME_LIMIT_S,
    "time_limit": LONG_TIME_LIMIT_S,
}


@_task(name=RECONCILE_TASK, **_LONG_OPTIONS)
def reconcile_task() -> dict[str, int]:
    """Find and repair drift in every collection (see :func:`embedplat.sync.reconcile`)."""
    return run_reconcile()


@_task(name=INDEX_UPKEEP_TASK, **_LONG_OPTIONS)
def index_upkeep_task(collection: str | None = None) -> list[str]:
    """Build missing or invalid HNSW indexes (for one collection, or for all)."""
    return run_index_upkeep(collection)
