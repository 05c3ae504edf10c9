"""Who continues a collection: the sweep's and a finished task's decisions, against real data.

These call the planning functions in-process (no broker): ``send_sync`` and the queue probe are
replaced by recorders, the database is real.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from embedplat.api import Platform
from embedplat.config import Settings
from embedplat.db.connection import libpq_url
from embedplat.sync import hold_lease_liveness
from embedplat_workers import tasks
from embedplat_workers.settings import WorkerSettings


@pytest.fixture
def planner(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path) -> Iterator[list[Any]]:
    settings = WorkerSettings(
        base=Settings(database_url=db_url, home=tmp_path, batch_size=4, lease_seconds=30),
        task_rounds=1,
        max_parallel_tasks=4,
    )
    monkeypatch.setattr(tasks, "_runtime", tasks.Runtime(settings, db_url))
    sent: list[Any] = []
    monkeypatch.setattr(tasks, "send_sync", lambda follow_up, expires_s=0: sent.append(follow_up))
    monkeypatch.setattr(tasks, "broker_queue_idle", lambda: True)
    yield sent


def _collection_id(url: str, name: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT id FROM embedplat.collections WHERE name = %s", (name,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_sweep_wakes_idle_collections_with_work_only(
    platform: Platform, db_url: str, planner: list[Any]
) -> None:
    platform.create_collection("busy", model="test-hash-64")
    platform.create_collection("idle", model="test-hash-64")
    platform.create_collection("empty", model="test-hash-64")
    for name in ("busy", "idle"):
        platform.ingest(name, [{"id": f"r{i}", "text": f"text {i}"} for i in range(50)])
    with psycopg.connect(libpq_url(db_url), autocommit=True) as holder:
        # A running task of "busy" (it holds a slot): its chain carries the collection on.
        holder.execute(
            "SELECT pg_advisory_lock(%s, %s)",
            (tasks.SLOT_LOCK_BASE, _collection_id(db_url, "busy")),
        )
        assert tasks.run_sweep() == {"idle": 1}
    assert [(f.collection, f.count) for f in planner] == [("idle", 1)]


def test_a_finished_task_doubles_while_workers_idle_and_waits_for_leases(
    platform: Platform, db_url: str, planner: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.create_collection("docs", model="test-hash-64")
    platform.ingest("docs", [{"id": f"r{i}", "text": f"text number {i}"} for i in range(40)])
    rt = tasks.runtime()
    # Plenty of claimable work, queue empty: continue and add one more task.
    assert tasks.plan_follow_up(rt, "docs") == tasks.FollowUp("docs", 2)
    # Messages waiting in the broker: every worker is busy, so only continue.
    monkeypatch.setattr(tasks, "broker_queue_idle", lambda: False)
    assert tasks.plan_follow_up(rt, "docs") == tasks.FollowUp("docs", 1)

    # All that is left is leased by a live worker (its lease runs 30 s more): come back when
    # the lease expires, not before, and not at all while a task of it still runs.
    platform.sync("docs")
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO embedplat.embedding_queue (chunk_id, collection_id, text_hash, "
            "leased_until, leased_by) SELECT id, collection_id, text_hash, "
            "now() + interval '30 seconds', 'busy:1:x' FROM embedplat.chunks LIMIT 1"
        )
    # A holder that is gone frees its lease at once: the chunk is claimable now.
    now = tasks.plan_follow_up(rt, "docs")
    assert now is not None and now.count == 1 and now.countdown == 0
    live = psycopg.connect(libpq_url(db_url), autocommit=True)
    hold_lease_liveness(live, "busy:1:x")
    follow_up = tasks.plan_follow_up(rt, "docs")
    assert follow_up is not None and follow_up.count == 1
    assert 25 < follow_up.countdown <= 31
    with psycopg.connect(libpq_url(db_url), autocommit=True) as holder:
        holder.execute(
            "SELECT pg_advisory_lock(%s, %s)",
            (tasks.SLOT_LOCK_BASE + 1, _collection_id(db_url, "docs")),
        )
        assert tasks.plan_follow_up(rt, "docs") is None
    live.close()
