"""The zero-downtime model switch against real PostgreSQL (docs/models.md).

The deterministic test embedders of two dimensions (test-hash-16 -> test-hash-24) serve for the
mechanics: their vectors differ by model, so a search comparing vectors of two models would be
caught by its similarities.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.errors import InvalidInputError, ModelError, ModelMismatchError
from embedplat.switch import RETIRE_GRACE_SECONDS
from embedplat.sync import (
    CollectionModels,
    SyncOptions,
    SyncReport,
    chunk_stale_records,
    embed_round,
    hold_lease_liveness,
    release_leases,
)
from tests.fix_cli import _env, documented_keys, run
from tests.fix_embedders import REPO_ROOT, UNLOADABLE_MODEL, HashEmbedder
from tests.waiting import wait_for

OLD, NEW = "test-hash-16", "test-hash-24"


def _text(record: int, paragraphs: int = 3) -> str:
    return "\n\n".join(
        f"Record {record} part {p}: " + " ".join(f"w{record}p{p}t{i}" for i in range(40))
        for p in range(paragraphs)
    )


def _words(record: int) -> str:
    """A query matching record ``record`` only: 15 of the words of one of its paragraphs."""
    return " ".join(f"w{record}p1t{i}" for i in range(15))


def _ingest(platform: Platform, n: int = 12) -> None:
    platform.ingest(
        "docs", [{"id": str(i), "text": _text(i), "topic": f"t{i % 3}"} for i in range(n)]
    )


@pytest.fixture
def docs(platform: Platform) -> Platform:
    """Collection "docs" with 12 records, chunked small, fully embedded with OLD."""
    platform.create_collection("docs", model=OLD, chunk_tokens=40, chunk_overlap=0)
    _ingest(platform)
    report = platform.sync("docs")
    assert report.chunks_embedded > 12 and not report.more_work
    return platform


def _query(conn: psycopg.Connection[Any], sql: str) -> Any:
    return conn.execute(sql).fetchall()


def _state(platform: Platform) -> dict[str, Any]:
    with platform.connection() as conn:
        row = conn.execute(
            """
            SELECT c.model_name, m.name, c.switch_model_name, c.kept_model_id,
                   (SELECT count(*) FROM embedplat.chunks ch WHERE ch.collection_id = c.id),
                   (SELECT count(*) FROM embedplat.embedding_queue q
                     WHERE q.collection_id = c.id AND q.for_switch),
                   (SELECT count(*) FROM embedplat.embedding_queue q
                     WHERE q.collection_id = c.id AND NOT q.for_switch),
                   (SELECT count(*) FROM embedplat.retired_models r WHERE r.collection_id = c.id)
            FROM embedplat.collections c
            LEFT JOIN embedplat.embedding_models m ON m.id = c.active_model_id
            WHERE c.name = 'docs'
            """
        ).fetchone()
    assert row is not None
    keys = ("model", "active", "switch", "kept", "chunks", "switch_queue", "queue", "retired")
    return dict(zip(keys, row, strict=True))


def _vectors(platform: Platform, model: str, current_only: bool = True) -> int:
    """Vectors of ``model`` in "docs" (only those of the chunk's current text)."""
    with platform.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM embedplat.embeddings e "
            "JOIN embedplat.embedding_models m ON m.id = e.model_id "
            "JOIN embedplat.chunks ch ON ch.id = e.chunk_id "
            "JOIN embedplat.collections c ON c.id = e.collection_id "
            "WHERE c.name = 'docs' AND m.name = %s AND (NOT %s OR e.text_hash = ch.text_hash)",
            (model, current_only),
        ).fetchone()
    return int(row[0]) if row else 0


def _age_retirements(platform: Platform) -> None:
    """Make the retired models' grace period over (the test cannot wait 15 s each time)."""
    with platform.connection() as conn:
        conn.execute("UPDATE embedplat.retired_models SET retired_at = now() - interval '1 hour'")


def _index_valid(platform: Platform, model: str) -> bool:
    with platform.connection() as conn:
        row = conn.execute(
            "SELECT embedplat.ann_index_is_valid(c.id, m.id) FROM embedplat.collections c, "
            "embedplat.embedding_models m WHERE c.name = 'docs' AND m.name = %s",
            (model,),
        ).fetchone()
    return bool(row and row[0])


def test_switch_backfills_in_the_background_then_swaps(docs: Platform) -> None:
    before = _state(docs)
    assert _index_valid(docs, OLD)
    started = docs.switch_model("docs", NEW)
    assert (started.state, started.from_model, started.to_model) == ("started", OLD, NEW)
    assert started.chunks == before["chunks"] and started.chunks_queued == before["chunks"]
    assert started.chunks_reused == 0

    # Until the swap, searches use the old model: its dimension, its vectors.
    hits = docs.search("docs", _words(3), k=3)
    assert hits[0].id == "3"
    assert _state(docs)["active"] == OLD
    progress = docs.switches("docs")[0]
    assert (progress.chunks, progress.chunks_done, progress.chunks_queued) == (
        before["chunks"],
        0,
        before["chunks"],
    )

    report = docs.sync("docs")
    assert report.switched == ["docs"]
    assert report.switch_chunks_embedded == before["chunks"]
    assert report.chunks_embedded == 0  # nothing of the old model was stale
    after = _state(docs)
    assert (after["model"], after["active"], after["switch"]) == (NEW, NEW, None)
    assert after["switch_queue"] == after["queue"] == 0
    assert _vectors(docs, NEW) == before["chunks"]
    assert _index_valid(docs, NEW)
    assert docs.switches() == []

    # The old vectors stay for the grace period (a search that read the collection just
    # before the swap may still scan them), then a sync deletes them and drops their index.
    assert after["retired"] == 1 and _vectors(docs, OLD) == before["chunks"]
    assert docs.sync("docs").retired_vectors_deleted == 0  # still within the grace period
    _age_retirements(docs)
    assert docs.sync("docs").retired_vectors_deleted == before["chunks"]
    assert _vectors(docs, OLD, current_only=False) == 0
    assert _state(docs)["retired"] == 0
    assert not _index_valid(docs, OLD)

    hits = docs.search("docs", _words(3), k=3)
    assert hits[0].id == "3"
    with docs.connection() as conn, pytest.raises(psycopg.errors.DataException):
        conn.execute("SELECT * FROM embedplat.search('docs', %s::vector)", (str([0.1] * 16),))


def test_retire_grace_is_the_same_in_python_and_sql(platform: Platform) -> None:
    with platform.connection() as conn:
        row = conn.execute("SELECT extract(epoch FROM embedplat.retire_grace())").fetchone()
        assert row is not None and float(row[0]) == RETIRE_GRACE_SECONDS
        # (That embedplat.ann_index_is_valid finds the index under the name the indexes module
        # gives it is checked by the first test: it finds the index the sync built.)
        missing = conn.execute("SELECT embedplat.ann_index_is_valid(7, 12)").fetchone()
        assert missing == (False,)


def test_edits_during_a_switch_are_embedded_with_both_models(docs: Platform) -> None:
    docs.switch_model("docs", NEW)
    docs.ingest("docs", [{"id": "5", "text": _text(5) + "\n\nA new closing paragraph here."}])
    with docs.connection() as conn:
        info = docs.collection("docs")
        cut = chunk_stale_records(conn, info, HashEmbedder(16), limit=10)
        assert cut.chunked == 1 and cut.queued >= 1
        kinds = _query(
            conn,
            "SELECT q.for_switch, count(*) FROM embedplat.embedding_queue q "
            "JOIN embedplat.chunks ch ON ch.id = q.chunk_id "
            "JOIN embedplat.records r ON r.id = ch.record_id "
            "WHERE r.external_id = '5' GROUP BY 1 ORDER BY 1",
        )
    # The new chunk: one row for the active model, one for the target; the record's other
    # chunks (unchanged text) only had the back-fill's row already.
    assert kinds[0] == (False, cut.queued)
    assert kinds[1][0] is True and kinds[1][1] >= cut.queued

    report = docs.sync("docs")
    assert report.switched == ["docs"] and report.chunks_embedded == cut.queued
    chunks = _state(docs)["chunks"]
    # Every chunk, the edited one included, has a current vector of both models (the old
    # ones are retired, not yet purged).
    assert _vectors(docs, NEW) == chunks
    assert _vectors(docs, OLD) == chunks


def test_a_round_takes_the_active_models_work_first_but_never_all_of_it(docs: Platform) -> None:
    docs.switch_model("docs", NEW)
    docs.ingest("docs", [{"id": str(i), "text": _text(i) + " edited"} for i in range(6)])
    options = SyncOptions(batch_size=2, claim_factor=3, build_index=False, worker_id="w")
    with docs.new_connection() as conn:
        conn.autocommit = True
        info = docs.collection("docs")
        chunk_stale_records(conn, info, HashEmbedder(16), limit=10)
        active_queued = _state(docs)["queue"]
        assert active_queued >= 6
        models = CollectionModels(conn, info, docs.embedder)
        hold_lease_liveness(conn, "w")
        report_kinds = []
        try:
            report = SyncReport()
            claimed = embed_round(conn, models, options, report)
            report_kinds.append((report.chunks_embedded, report.switch_chunks_embedded))
        finally:
            release_leases(conn, "w")
    # 6 per round: at most 4 of the active model's work (all but one batch), the rest back-fill.
    assert claimed == 6
    assert report_kinds == [(4, 2)]


def test_cancel_deletes_the_backfill_and_keeps_the_active_model(docs: Platform) -> None:
    docs.switch_model("docs", NEW)
    docs.sync("docs", options=docs.sync_options(max_rounds=1, batch_size=4))
    stored = _vectors(docs, NEW)
    assert stored > 0 and _state(docs)["switch"] == NEW
    cancelled = docs.cancel_switch("docs")
    assert (cancelled.model, cancelled.vectors_deleted) == (NEW, stored)
    assert cancelled.queued_deleted == _state(docs)["chunks"] - stored
    state = _state(docs)
    assert (state["model"], state["active"], state["switch"], state["switch_queue"]) == (
        OLD,
        OLD,
        None,
        0,
    )
    assert _vectors(docs, NEW, current_only=False) == 0
    assert docs.search("docs", _words(3), k=1)[0].id == "3"
    with pytest.raises(InvalidInputError, match="no model switch in progress"):
        docs.cancel_switch("docs")


def test_keep_old_then_switching_back_reuses_the_kept_vectors(docs: Platform) -> None:
    chunks = _state(docs)["chunks"]
    with pytest.raises(InvalidInputError, match="no kept vectors"):
        docs.switch_model("docs", NEW, reuse=True)
    assert _state(docs)["switch"] is None  # the refusal stored nothing

    docs.switch_model("docs", NEW, keep_old=True)
    assert docs.sync("docs").switched == ["docs"]
    state = _state(docs)
    assert state["retired"] == 0 and _vectors(docs, OLD) == chunks  # kept, not retired

    # Back, reusing every kept vector: nothing to embed, so the swap happens at once.
    back = docs.switch_model("docs", OLD, reuse=True, keep_old=True)
    assert (back.state, back.chunks_reused, back.chunks_queued) == ("switched", chunks, 0)
    assert _state(docs)["active"] == OLD
    assert docs.search("docs", _words(3), k=1)[0].id == "3"

    # An edit since: switching forward again re-embeds only the changed chunk.
    docs.ingest("docs", [{"id": "7", "text": _text(7) + "\n\nOne more paragraph at the end."}])
    docs.sync("docs")
    again = docs.switch_model("docs", NEW, reuse=True)
    changed = again.chunks - again.chunks_reused
    assert again.state == "started" and 1 <= changed <= 2 and again.chunks_queued == changed
    assert docs.sync("docs").switch_chunks_embedded == changed


def test_a_model_that_cannot_load_is_refused_when_switched_to(docs: Platform) -> None:
    with pytest.raises(ModelError):
        docs.switch_model("docs", UNLOADABLE_MODEL)
    assert _state(docs)["switch"] is None
    with pytest.raises(InvalidInputError, match="uses model"):
        docs.switch_model("docs", OLD)
    docs.switch_model("docs", NEW)
    with pytest.raises(InvalidInputError, match="switching to"):
        docs.switch_model("docs", "test-hash-32")
    resumed = docs.switch_model("docs", NEW)
    assert resumed.state == "resumed"


def test_a_chunk_the_backfill_missed_is_queued_by_the_swap_check(docs: Platform) -> None:
    """A chunk cut by a transaction that began before the switch has no back-fill row (the
    race the swap's completeness check is there for): the swap waits for it."""
    docs.switch_model("docs", NEW)
    with docs.connection() as conn:
        conn.execute(
            "DELETE FROM embedplat.embedding_queue WHERE for_switch AND chunk_id = "
            "(SELECT min(id) FROM embedplat.chunks)"
        )
    first = docs.sync("docs")
    assert first.switched == [] and first.more_work
    assert _state(docs)["switch_queue"] == 1
    second = docs.sync("docs")
    assert second.switched == ["docs"] and second.switch_chunks_embedded == 1
    assert _vectors(docs, NEW) == _state(docs)["chunks"]


def test_searches_during_the_whole_switch_never_fail_nor_mix_models(docs: Platform) -> None:
    queries = [_words(i) for i in range(12)]
    embedders = {name: HashEmbedder(int(name.rsplit("-", 1)[1])) for name in (OLD, NEW)}
    with docs.connection() as conn:
        chunk_text = dict(_query(conn, "SELECT content, content FROM embedplat.chunks"))
    errors: list[BaseException] = []
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        n = 0
        while not stop.is_set():
            query = queries[n % len(queries)]
            n += 1
            try:
                hits = docs.search("docs", query, k=5, per_record=False)
            except BaseException as exc:  # every failure is the test's finding
                errors.append(exc)
                continue
            # Each similarity is the cosine of the query and the chunk under one model, the
            # same for every hit of the search.
            models = set()
            for hit in hits:
                assert hit.chunk in chunk_text
                for name, embedder in embedders.items():
                    q, c = embedder.embed([query, hit.chunk])
                    if abs(float(np.dot(q, c)) - hit.score) < 1e-4:
                        models.add(name)
            if hits:
                if len(models) != 1:
                    errors.append(AssertionError(f"hits of {query!r} match models {models}"))
                seen.append(next(iter(models), "?"))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        wait_for(lambda: len(seen) >= 5, 120, "searches before the switch")
        docs.switch_model("docs", NEW)
        docs.sync("docs", options=docs.sync_options(batch_size=4))
        _age_retirements(docs)
        wait_for(lambda: seen[-1:] == [NEW], 120, "a search answered by the new model")
        docs.sync("docs")  # the purge, while searches go on
        n = len(seen)
        wait_for(lambda: len(seen) >= n + 5, 120, "searches after the purge")
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert seen[0] == OLD and seen[-1] == NEW
    # Once the new model answered, the old one never did again.
    assert OLD not in seen[seen.index(NEW) :]


def test_a_worker_killed_mid_backfill_loses_nothing(docs: Platform, db_url: str) -> None:
    docs.switch_model("docs", NEW)
    chunks = _state(docs)["chunks"]
    env = {
        **_env(EMBEDPLAT_DATABASE_URL=db_url, EMBEDPLAT_TEST_EMBED_DELAY="1.0"),
        "EMBEDPLAT_BATCH_SIZE": "2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedplat.cli", "sync", "docs", "--json"],
        env=env,
        cwd=str(REPO_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: _vectors(docs, NEW) >= 2, 120, "the killed sync's first vectors")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert 0 < _vectors(docs, NEW) < chunks
    report = docs.sync("docs")
    assert report.switched == ["docs"]
    assert _vectors(docs, NEW) == chunks
    with docs.connection() as conn:
        duplicates = _query(
            conn,
            "SELECT chunk_id FROM embedplat.embeddings GROUP BY chunk_id, model_id "
            "HAVING count(*) > 1",
        )
    assert duplicates == []


def test_a_query_vector_of_the_old_model_is_refused_naming_both(docs: Platform) -> None:
    old_vector = HashEmbedder(16).embed(["w3p1t5"])[0]
    docs.switch_model("docs", NEW)
    docs.sync("docs")
    with docs.connection() as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(
            "SELECT * FROM embedplat.search('docs', %s::vector, query_model => %s)",
            (str(old_vector.tolist()), OLD),
        )
    message = str(caught.value)
    assert OLD in message and NEW in message
    with pytest.raises(ModelMismatchError):
        docs.search("docs", old_vector)


def test_status_and_the_cli_show_the_switch(docs: Platform, db_url: str) -> None:
    env = _env(EMBEDPLAT_DATABASE_URL=db_url)
    out = run(["model", "switch", "docs", NEW, "--json"], env)
    started = json.loads(out.stdout)
    assert started["state"] == "started" and started["to_model"] == NEW
    assert set(started) == documented_keys("model switch --json")
    status = json.loads(run(["status", "--json"], env).stdout)["collections"][0]
    assert status["switch"]["to_model"] == NEW
    assert status["switch"]["chunks_done"] == 0 and status["stale"] == 0
    assert set(status["switch"]) == documented_keys("switch` in `status --json")
    text = run(["status"], env).stdout
    assert f"switching from {OLD} to {NEW}" in text

    cancelled = json.loads(run(["model", "switch", "docs", "--cancel", "--json"], env).stdout)
    assert cancelled["model"] == NEW
    assert set(cancelled) == documented_keys("model switch --cancel --json")
    bad = run(["model", "switch", "docs", "--cancel"], env, check=False)
    assert bad.returncode != 0 and "no model switch in progress" in bad.stderr
