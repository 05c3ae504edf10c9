"""Every advisory-lock key embedplat takes, in one table.

PostgreSQL's two-key advisory locks are ``(classid, objid)``; embedplat uses the first key for
the kind of lock and the second for the collection id. Keys live here and nowhere else, so two
kinds can never collide by accident and a reader of ``pg_locks`` can tell them apart.
"""

from __future__ import annotations

from enum import IntEnum


class LockKey(IntEnum):
    """First keys of embedplat's advisory locks (the second key is a collection id)."""

    # Building or rebuilding a (collection, model) ANN index: the sync engine's build after a
    # back-fill and `embedplat index` take it, so the two never build one index at once.
    ANN_INDEX_BUILD = 7_240_515
    # Ingest into a collection (transaction-level): concurrent ingests take turns, since
    # upserts of overlapping ids in different orders would deadlock.
    INGEST = 7_240_520
    # Liveness of a lease holder: held (second key: hashtext(worker id)) on the connection a
    # sync claims with, for as long as it works; leases of a holder without it are claimable.
    # sql/work.v2.sql repeats this number in the view embedplat.live_lease_holders.
    LEASE_HOLDER = 7_240_530
    # Celery task slots: slot N of a collection is ``TASK_SLOT_BASE + N`` for N below
    # EMBEDPLAT_MAX_PARALLEL_TASKS; keys above this one are reserved for them.
    TASK_SLOT_BASE = 7_240_600
