"""Real Celery worker processes against real Redis and PostgreSQL: exactly-once, crashes, restarts.

Every test ingests a backlog with the deterministic test embedder, starts worker (and beat or
listener) processes, and waits for the outcome in the database. The test embedder's plugin
(:mod:`tests.fix_embedders`, loaded by the workers through ``EMBEDPLAT_PLUGINS``) makes each
model call slow and logged: the logs of all workers together list every text the model
embedded, so "no chunk embedded twice" is "no duplicate line across the logs". Waits are
polls with minutes of margin (:func:`tests.waiting.wait_for`); the only sleeps are the length
of a broker or database outage.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.config import Settings
from embedplat.db import migrate
from embedplat.db.connection import libpq_url
from embedplat.db.vectors import vector_literal
from tests.fix_embedders import HashEmbedder, read_log
from tests.fix_workers import (
    MODEL,
    RedisServer,
    Stack,
    chunk_texts,
    embeddings_count,
    leased_by,
    observed,
    paragraphs,
    stack_env,
    stale_total,
    wait_for,
)
from tests.integration.sync_helpers import counts

pytestmark = pytest.mark.slow


def _backlog(platform: Platform, records: int, paras: int = 3, words: int = 20) -> None:
    platform.create_collection("docs", model=MODEL, chunk_tokens=40, chunk_overlap=5)
    platform.ingest(
        "docs", [{"id": f"r{i}", "text": paragraphs(i, paras, words)} for i in range(records)]
    )


def _hooks(log: Path, delay: float, gate: Path | None = None, **more: str) -> dict[str, str]:
    return {
        **observed(log, delay, gate),
        "EMBEDPLAT_BATCH_SIZE": "4",
        "EMBEDPLAT_TASK_ROUNDS": "1",
        **more,
    }


def _done(url: str) -> bool:
    c = counts(url)
    return (
        c["queue"] == 0
        and c["stale_records"] == 0
        and c["chunks"] > 0
        and c["embeddings"] == c["chunks"]
    )


def _assert_embedded_exactly_once(url: str, logs: list[Path]) -> list[str]:
    texts = chunk_texts(url)
    embedded = [t for log in logs for t in read_log(log)]
    assert embeddings_count(url) == len(texts)
    assert sorted(embedded) == sorted(texts), "every chunk through the model once, none twice"
    assert stale_total(url) == 0
    return embedded


def _index_exists(url: str) -> bool:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'embedplat' "
            "AND indexname LIKE 'ix_embeddings_ann_%'"
        ).fetchone()
    return bool(row and row[0])


def test_two_workers_drain_a_backlog_exactly_once(
    platform: Platform, db_url: str, stack: Stack, celery_client: Any, tmp_path: Path
) -> None:
    _backlog(platform, 40)
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    for i, log in enumerate(logs, 1):
        stack.worker(f"w{i}", _hooks(log, 0.05))
    celery_client.send_task("embedplat.sync_collection", args=["docs"])
    wait_for(lambda: _done(db_url), 300, "the backlog to be embedded")
    embedded = _assert_embedded_exactly_once(db_url, logs)
    assert len(embedded) > 40
    assert all(read_log(log) for log in logs), "one task fanned out to both workers"
    status = platform.status()[0]
    assert (status.stale, status.failed, status.embedded) == (0, 0, len(embedded))
    # At the end of the backlog a task asks for the ANN index.
    wait_for(lambda: _index_exists(db_url), 300, "the HNSW index")


def _wait_for_lease(url: str, timeout: float = 300) -> list[str]:
    return list(wait_for(lambda: leased_by(url), timeout, "a worker to claim chunks", every=0.05))


def test_worker_killed_mid_batch_work_is_finished_after_restart_and_lease_expiry(
    platform: Platform, db_url: str, stack: Stack, celery_client: Any, tmp_path: Path
) -> None:
    _backlog(platform, 12, paras=2, words=10)
    victim_log, rescuer_log = tmp_path / "victim.log", tmp_path / "rescuer.log"
    # The victim sleeps 300 s inside every model call: it is killed holding its claim.
    victim = stack.worker("victim", _hooks(victim_log, 300, EMBEDPLAT_LEASE_SECONDS="3"))
    celery_client.send_task("embedplat.sync_collection", args=["docs"])
    _wait_for_lease(db_url)
    os.killpg(victim.popen.pid, signal.SIGKILL)
    victim.popen.wait(timeout=20)
    assert read_log(victim_log) == []  # it died before its batch was stored

    # "Restart": a fresh worker, and a task as the sweep or the listener would send it.
    stack.worker("rescuer", _hooks(rescuer_log, 0, EMBEDPLAT_LEASE_SECONDS="3"))
    celery_client.send_task("embedplat.sync_collection", args=["docs"])
    # The victim's chunks come back when its lease expires: the rescuer's chain finds them
    # leased, schedules itself for the expiry, and finishes them then.
    wait_for(lambda: _done(db_url), 300, "the rescuer to finish the victim's work")
    _assert_embedded_exactly_once(db_url, [victim_log, rescuer_log])


def test_killed_prefork_child_is_replaced_and_its_task_requeued(
    platform: Platform, db_url: str, stack: Stack, celery_client: Any, tmp_path: Path
) -> None:
    _backlog(platform, 12, paras=2, words=10)
    log = tmp_path / "prefork.log"
    worker = stack.worker(
        "prefork", _hooks(log, 2, EMBEDPLAT_LEASE_SECONDS="4"), pool="prefork", concurrency=1
    )
    celery_client.send_task("embedplat.sync_collection", args=["docs"])
    holder = _wait_for_lease(db_url)[0]
    child_pid = int(holder.split(":")[1])  # leased_by is host:pid:random
    assert child_pid != worker.popen.pid
    os.kill(child_pid, signal.SIGKILL)  # mid-batch: it sleeps inside the model call
    # task_reject_on_worker_lost: the message goes back to the queue, a new child runs it, and
    # the killed child's chunks are claimed again after their lease expired. No help needed.
    wait_for(lambda: _done(db_url), 300, "the replacement child to finish")
    assert worker.alive()
    # billiard logs every child that died of a signal, by pid.
    assert f"pid:{child_pid} exited with 'signal 9 (SIGKILL)'" in worker.text()
    _assert_embedded_exactly_once(db_url, [log])


def test_broker_restart_mid_run_workers_reconnect_and_finish(
    platform: Platform,
    db_url: str,
    stack: Stack,
    redis_server: RedisServer,
    celery_client: Any,
    tmp_path: Path,
) -> None:
    _backlog(platform, 40)
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers = [stack.worker(f"w{i}", _hooks(log, 0.7)) for i, log in enumerate(logs, 1)]
    # A beat with a 1 s sweep: the redis-server here keeps nothing across a restart, so queued
    # messages are lost with it, as they would be with any non-persistent broker.
    stack.beat("beat", {"EMBEDPLAT_SWEEP_SECONDS": "1"})
    celery_client.send_task("embedplat.sync_collection", args=["docs"])
    wait_for(lambda: embeddings_count(db_url) > 0, 300, "the first vectors")
    redis_server.stop()
    time.sleep(2)
    assert embeddings_count(db_url) < len(chunk_texts(db_url)), "restart happened mid-run"
    redis_server.start()
    wait_for(lambda: _done(db_url), 300, "the workers to finish after the broker restart")
    _assert_embedded_exactly_once(db_url, logs)
    for worker in workers:
        assert worker.alive(), "the same worker processes reconnected"
        # Each worker noticed the lost connection (and re-established it: it finished above).
        assert "consumer: Connection to broker lost" in worker.text()


@pytest.fixture
def own_database() -> Any:
    """A dedicated embedded PostgreSQL this test may stop and start (on the same port).

    The restart keeps its port by the production check alone (``embedded._port_free``), while
    the workers' old connections still linger on it.
    """
    from embedplat.db.embedded import EmbeddedServer

    home = Path(tempfile.mkdtemp(prefix="embedplat-dbrestart-"))
    server = EmbeddedServer(home, durable=False)
    url = server.start()
    migrate.upgrade(url)
    try:
        yield server, url
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_database_restart_mid_run_tasks_retry_and_finish(
    own_database: Any, redis_server: RedisServer, celery_client: Any, tmp_path: Path
) -> None:
    server, url = own_database
    with Platform(url, Settings(home=tmp_path / "home")) as platform:
        _backlog(platform, 30)
    stack = Stack(tmp_path, stack_env(url, redis_server.url, tmp_path))
    log = tmp_path / "w.log"
    try:
        worker = stack.worker("w", _hooks(log, 0.7, EMBEDPLAT_LEASE_SECONDS="3"))
        listener = stack.listener()
        celery_client.send_task("embedplat.sync_collection", args=["docs"])
        wait_for(lambda: embeddings_count(url) > 0, 300, "the first vectors")
        server.stop()  # fast shutdown: the worker's connections are cut mid-task
        time.sleep(3)
        assert server.start() == url
        wait_for(lambda: _done(url), 300, "the worker to finish after the database restart")
        # Tasks failed on the lost connection and were retried by Celery, not lost.
        assert re.search(
            r"Retry in \d+s: (AdminShutdown|OperationalError|DatabaseUnavailable)", worker.text()
        ), worker.text()[-3000:]
        assert worker.alive()
        texts = chunk_texts(url)
        assert embeddings_count(url) == len(texts)
        # A batch whose write was cut off is embedded again (at-least-once model calls);
        # every chunk is stored exactly once (the primary key, and compare-and-set).
        assert set(read_log(log)) == set(texts)
        assert stale_total(url) == 0
        # The listener lost its connection too, reconnected, and serves notifications again.
        listener.wait_for_log("listening on embedplat_changes", count=2, timeout=300)
        assert "change listener lost the database" in listener.text()
        with Platform(url, Settings(home=tmp_path / "home")) as platform:
            platform.ingest("docs", [{"id": "after", "text": "written after the restart"}])
        wait_for(lambda: "written after the restart" in read_log(log), 300, "the NOTIFY path")
    finally:
        stack.stop_all()
        print(stack.dump_logs())


def test_record_updated_while_embedded_ends_with_the_new_text(
    platform: Platform, db_url: str, stack: Stack, celery_client: Any, tmp_path: Path
) -> None:
    platform.create_collection("docs", model=MODEL)
    old, new = "the original text of the record", "entirely rewritten words here"
    platform.ingest("docs", [{"id": "a", "text": old}])
    # w1's model call ends only when the test opens the gate; w2 has no gate.
    gate = tmp_path / "gate"
    w1 = stack.worker("w1", _hooks(tmp_path / "w1.log", 0, gate))
    celery_client.send_task("embedplat.sync_collection", args=["docs"])
    _wait_for_lease(db_url)  # w1 is now inside the model with the old text
    stack.worker("w2", _hooks(tmp_path / "w2.log", 0))
    platform.ingest("docs", [{"id": "a", "text": new}])
    # w2 (w1 is busy) re-chunks the record and embeds the new text while w1 still waits.
    celery_client.send_task("embedplat.sync_collection", args=["docs"])
    wait_for(lambda: new in read_log(tmp_path / "w2.log"), 300, "w2 to embed the new text")
    gate.touch()
    # w1's vector of the old text is refused by compare-and-set when it tries to store it.
    w1.wait_for_log("'chunks_discarded': 1", timeout=300)
    assert read_log(tmp_path / "w1.log") == [old]

    def final_vector() -> Any:
        with psycopg.connect(libpq_url(db_url)) as conn:
            return conn.execute(
                "SELECT ch.content, e.embedding::text FROM embedplat.embeddings e "
                "JOIN embedplat.chunks ch ON ch.id = e.chunk_id AND ch.text_hash = e.text_hash"
            ).fetchall()

    wait_for(lambda: _done(db_url) and final_vector(), 300, "the new text's vector")
    rows = final_vector()
    assert [content for content, _ in rows] == [new]
    stored = np.array([float(x) for x in rows[0][1].strip("[]").split(",")], dtype=np.float32)
    expected = HashEmbedder(64).embed([new])[0]
    assert np.allclose(stored, expected, atol=1e-6)
    assert embeddings_count(db_url) == 1  # nothing of the old text survived


def _searchable(url: str, text: str) -> bool:
    vector = HashEmbedder(64).embed([text])[0]
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT id FROM embedplat.search('docs', %s::vector, 1)", (vector_literal(vector),)
        ).fetchall()
    return bool(rows) and rows[0][0] == "fresh"


def test_notify_makes_a_new_record_searchable_within_seconds_without_sweep(
    platform: Platform, db_url: str, stack: Stack
) -> None:
    platform.create_collection("docs", model=MODEL)
    platform.ingest("docs", [{"id": "old", "text": "something already there"}])
    platform.sync("docs")
    worker = stack.worker("w", {"EMBEDPLAT_SWEEP_SECONDS": "0"})
    listener = stack.listener({"EMBEDPLAT_SWEEP_SECONDS": "0"})
    # The listener sends one catch-up sweep when it connects; let it pass, so that from here
    # on only a notification can wake the worker.
    worker.wait_for_log("embedplat.sweep[", count=2)  # received, succeeded
    text = "a brand new record about tomato blight"
    started = time.monotonic()
    platform.ingest("docs", [{"id": "fresh", "text": text}])
    # Only a notification can wake the worker (no sweep): the margin is for a loaded machine,
    # the time it took is printed, never asserted (benchmarks/ measures it).
    wait_for(lambda: _searchable(db_url, text), 300, "the new record to be searchable")
    print(f"change -> searchable in {time.monotonic() - started:.2f}s")
    listener.wait_for_log("sent sync task for 'docs'")


def test_notify_listener_inside_embedplat_worker_beat(
    platform: Platform, db_url: str, stack: Stack
) -> None:
    platform.create_collection("docs", model=MODEL)
    platform.ingest("docs", [{"id": "old", "text": "something already there"}])
    platform.sync("docs")
    embedplat = str(Path(os.sys.executable).with_name("embedplat"))
    worker = stack.spawn(
        "cli-worker",
        [embedplat, "worker", "--concurrency", "1", "--beat", "--loglevel", "info"],
        {"EMBEDPLAT_SWEEP_SECONDS": "0"},
    )
    worker.wait_for_log("listening on embedplat_changes")
    worker.wait_for_log(" ready.")
    worker.wait_for_log("embedplat.sweep[", count=2)  # the listener's catch-up sweep
    text = "another new record about pruning roses"
    platform.ingest("docs", [{"id": "fresh", "text": text}])
    wait_for(lambda: _searchable(db_url, text), 300, "the new record to be searchable")
    assert "embedplat-sweep" not in worker.text()  # the sweep was disabled: NOTIFY did it


def test_two_beat_schedulers_cause_no_double_embedding(
    platform: Platform, db_url: str, stack: Stack, tmp_path: Path
) -> None:
    _backlog(platform, 30)
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    for i, log in enumerate(logs, 1):
        stack.worker(f"w{i}", _hooks(log, 0.3))
    beats = [stack.beat(f"beat{i}", {"EMBEDPLAT_SWEEP_SECONDS": "1"}) for i in (1, 2)]
    wait_for(lambda: _done(db_url), 300, "the backlog to be embedded")
    for beat in beats:
        beat.wait_for_log("Sending due task embedplat-sweep", count=2)
    _assert_embedded_exactly_once(db_url, logs)


def _active_model(url: str) -> str | None:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT m.name FROM embedplat.collections c JOIN embedplat.embedding_models m "
            "ON m.id = c.active_model_id WHERE c.name = 'docs'"
        ).fetchone()
    return None if row is None else str(row[0])


def test_workers_back_fill_a_model_switch_and_swap(
    platform: Platform, db_url: str, stack: Stack, celery_client: Any, tmp_path: Path
) -> None:
    _backlog(platform, 12, paras=2, words=10)
    platform.sync("docs")
    target = "test-hash-32"
    started = platform.switch_model("docs", target)
    assert started.chunks_queued == started.chunks > 0
    log = tmp_path / "w.log"
    stack.worker("w", _hooks(log, 0.05))
    celery_client.send_task("embedplat.sync_collection", args=["docs"])
    wait_for(lambda: _active_model(db_url) == target, 300, "the worker to end the switch")
    # The worker embedded every chunk once, with the target (the old model had nothing stale).
    assert sorted(read_log(log)) == sorted(chunk_texts(db_url))
    with psycopg.connect(libpq_url(db_url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM embedplat.embeddings e "
            "JOIN embedplat.chunks ch ON ch.id = e.chunk_id AND ch.text_hash = e.text_hash "
            "JOIN embedplat.embedding_models m ON m.id = e.model_id WHERE m.name = %s",
            (target,),
        ).fetchone()
    assert row == (started.chunks,)
    status = platform.status()[0]
    assert (status.model, status.switch, status.stale) == (target, None, 0)
