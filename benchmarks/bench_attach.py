"""Attached tables (docs/attach.md): what the triggers cost the app, and how fast a back-fill is.

* ``overhead``: 100,000 rows bulk-inserted (``COPY`` and ``INSERT ... SELECT``) into an
  attached table vs. the same rows into an unattached twin, alternating, several runs each
  (goal: attached ≤ 1.5 x plain); one-row UPDATEs of an attached text column and of an
  unattached column, interleaved on the two tables (goals: added p50 ≤ 1 ms and ≤ 0.2 ms;
  the unattached-column UPDATE must cause no new work: stale records, queue rows and the
  records' xmin unchanged). A profile of the trigger follows (``pg_stat_user_functions`` with
  ``track_functions = all``, and the trigger's nested statements through ``auto_explain``).
* ``backfill``: attach a 1,000,000-row table and back-fill it (``embedplat.attach.backfill``,
  one transaction per batch) at batch 1,000 (the default) and 5,000, interleaved; records/s
  into ``embedplat.records`` (goal ≥ 50,000). Meanwhile an app writer thread updates and
  inserts single rows; how long each write took, compared with the same writer before the
  back-fill (goal: no write over 100 ms).

Rows are real text: SciFact titles with two consecutive abstract sentences each. Nothing is
embedded (the collection's model is the benchmarks' hash embedder, never called).

    python -m benchmarks.bench_attach [--quick] [--only overhead|backfill]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg

from embedplat.api import Platform
from embedplat.attach import DEFAULT_BACKFILL_BATCH, backfill, drain
from embedplat.db.connection import libpq_url

from .common import fresh_database, require_data, server, settings, write_parts
from .hash_embedder import model_name

PARTS = ("overhead", "backfill")
MODEL = model_name(64)  # never called: nothing is embedded here
GOAL_BULK_RATIO = 1.5
# inline_rows of the comparison attachment: every statement writes its records itself.
INLINE_EVERYTHING = 1_000_000_000
GOAL_TEXT_UPDATE_ADDED_P50_MS = 1.0
GOAL_OTHER_UPDATE_ADDED_P50_MS = 0.2
GOAL_BACKFILL_ROWS_PER_SECOND = 50_000
GOAL_APP_WRITE_MAX_MS = 100.0
MACHINE_NOTE = "measured on a shared 2-core machine (other work ran at the same time)"

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")

APP_TABLE = """
CREATE TABLE {name} (
    id bigint PRIMARY KEY,
    title text NOT NULL,
    body text,
    author text,
    views integer NOT NULL DEFAULT 0
)"""
COLUMNS = "id, title, body, author, views"


def _pairs() -> list[tuple[str, str]]:
    """(title, two consecutive sentences of its abstract) from every SciFact document."""
    out = []
    with require_data("scifact", "corpus.jsonl").open() as fh:
        for line in fh:
            doc = json.loads(line)
            sentences = [s for s in _SENTENCE.split(doc.get("text") or "") if s.strip()]
            for i in range(0, len(sentences) - 1, 2):
                out.append((doc["title"], f"{sentences[i]} {sentences[i + 1]}"))
    return out


def _connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_url(url), autocommit=True, **kwargs)


def _load_pairs(conn: psycopg.Connection[Any], pairs: list[tuple[str, str]]) -> None:
    conn.execute("CREATE TABLE bench_pairs (n integer PRIMARY KEY, title text, body text)")
    with conn.cursor() as cur, cur.copy("COPY bench_pairs (n, title, body) FROM STDIN") as copy:
        for n, (title, body) in enumerate(pairs):
            copy.write_row((n, title, body))
    conn.execute("ANALYZE bench_pairs")


def _fill_sql(table: str, first: int, rows: int, npairs: int) -> str:
    # Row i takes pair i mod npairs; authors repeat every 97 rows.
    return (
        f"INSERT INTO {table} ({COLUMNS}) "
        f"SELECT g, p.title, p.body, 'author ' || (g % 97), 0 "
        f"FROM generate_series({first}, {first + rows - 1}) g "
        f"JOIN bench_pairs p ON p.n = g % {npairs}"
    )


def _collection_id(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT id FROM embedplat.collections WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def _spread(values: list[float], digits: int = 3) -> dict[str, Any]:
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
        "all": [round(v, digits) for v in values],
    }


def _ms_percentile(seconds: list[float], q: float) -> float:
    return round(float(np.percentile([1000 * s for s in seconds], q)), 3)


# -- profile helpers ----------------------------------------------------------------------------

PROFILED = (
    "attach_trigger",
    "attach_sql_parts",
    "attach_rows_sql",
    "attach_upsert_sql",
    "attach_delete_records",
    "attach_backfill",
)


def _function_stats(conn: psycopg.Connection[Any]) -> dict[str, dict[str, float]]:
    # Each attachment has its own generated trigger function, embedplat_attach.attach_trigger_cN:
    # counted together as "attach_trigger".
    rows = conn.execute(
        "SELECT CASE WHEN schemaname = 'embedplat_attach' THEN 'attach_trigger' ELSE funcname END,"
        " sum(calls), sum(total_time), sum(self_time) "
        "FROM pg_stat_user_functions "
        "WHERE (schemaname = 'embedplat' AND funcname = ANY (%s)) "
        "   OR (schemaname = 'embedplat_attach' AND funcname LIKE 'attach\\_trigger\\_c%%') "
        "GROUP BY 1",
        (list(PROFILED),),
    ).fetchall()
    return {
        r[0]: {"calls": float(r[1]), "total_ms": float(r[2]), "self_ms": float(r[3])} for r in rows
    }


def _flush_stats(conn: psycopg.Connection[Any]) -> None:
    """Make this backend's pending function counters visible to other sessions now."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")


def _stats_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    out = {}
    for name, now in after.items():
        was = before.get(name, {"calls": 0.0, "total_ms": 0.0, "self_ms": 0.0})
        calls = now["calls"] - was["calls"]
        if calls <= 0:
            continue
        total = now["total_ms"] - was["total_ms"]
        out[name] = {
            "calls": int(calls),
            "total_ms": round(total, 2),
            "self_ms": round(now["self_ms"] - was["self_ms"], 2),
            "total_ms_per_call": round(total / calls, 4),
        }
    return out


@contextmanager
def _auto_explain(conn: psycopg.Connection[Any]) -> Iterator[list[str]]:
    """Plans (with actual times) of every statement ``conn`` runs, nested ones included,
    received as LOG messages: auto_explain, sent to this client only."""
    plans: list[str] = []

    def handler(diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "LOG" and diag.message_primary:
            plans.append(diag.message_primary)

    conn.add_notice_handler(handler)
    conn.execute("LOAD 'auto_explain'")
    for setting, value in (
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_analyze", "on"),
        ("auto_explain.log_nested_statements", "on"),
        ("auto_explain.log_timing", "on"),
        ("client_min_messages", "log"),
    ):
        conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
    try:
        yield plans
    finally:
        conn.execute("SET auto_explain.log_min_duration = -1")
        conn.execute("RESET client_min_messages")
        conn.remove_notice_handler(handler)


def _plan_summary(plans: list[str]) -> list[dict[str, Any]]:
    """The logged statements grouped by the start of their query text: how many ran and
    their total duration (a statement a function runs once per row shows up many times)."""
    groups: dict[str, dict[str, Any]] = {}
    for text in plans:
        m = re.match(r"duration: ([\d.]+) ms\s+plan:\s*\nQuery Text:\s*(.*)", text, re.S)
        if not m:
            continue
        query = " ".join(m.group(2).split())[:100]
        group = groups.setdefault(query, {"query": query, "count": 0, "total_ms": 0.0})
        group["count"] += 1
        group["total_ms"] += float(m.group(1))
    out = sorted(groups.values(), key=lambda g: -g["total_ms"])
    return [{**g, "total_ms": round(g["total_ms"], 3)} for g in out]


def _trigger_plan(plans: list[str]) -> str | None:
    """The plan of the trigger's main statement (the upsert), without its long query text."""
    for text in plans:
        if "WITH n AS MATERIALIZED" in text[:300]:
            start = text.find("Insert on records")
            return text[:40] + " ... " + text[start:] if start >= 0 else text[:4000]
    return None


# -- overhead -----------------------------------------------------------------------------------


def overhead(
    server_url: str, pairs: list[tuple[str, str]], rows: int, runs: int, updates: int
) -> dict[str, Any]:
    rng = random.Random(11)
    with fresh_database(server_url) as db, _connect(db) as conn:
        _load_pairs(conn, pairs)
        conn.execute(APP_TABLE.format(name="app_plain"))
        conn.execute(APP_TABLE.format(name="app_attached"))
        conn.execute(APP_TABLE.format(name="app_inline"))
        conn.execute("CREATE TABLE bench_src (LIKE app_plain)")
        conn.execute(_fill_sql("bench_src", 1, rows, len(pairs)))
        conn.execute("ANALYZE bench_src")
        src_bytes = conn.execute("SELECT pg_table_size('bench_src')").fetchone()[0]
        # The COPY input, in COPY's own text format, made once by the server: both tables
        # get exactly the same bytes and no client-side formatting is timed.
        buf = bytearray()
        with conn.cursor() as cur, cur.copy(f"COPY bench_src ({COLUMNS}) TO STDOUT") as copy:
            for block in copy:
                buf += block
        data = bytes(buf)
        with Platform(db, settings()) as platform:
            # The default attachment (a bulk statement queues its keys) and one that writes
            # every statement's records in the statement itself.
            for collection, table, inline_rows in (
                ("articles", "app_attached", None),
                ("articles_inline", "app_inline", INLINE_EVERYTHING),
            ):
                platform.attach(
                    collection,
                    f"public.{table}",
                    text_columns=["title", "body"],
                    metadata_columns=["author"],
                    model=MODEL,
                    inline_rows=inline_rows,
                )
        cid = _collection_id(conn, "articles")
        inline_cid = _collection_id(conn, "articles_inline")

        def records_of(collection_id: int) -> int:
            return int(
                conn.execute(
                    "SELECT count(*) FROM embedplat.records WHERE collection_id = %s",
                    (collection_id,),
                ).fetchone()[0]
            )

        def drain_seconds() -> float:
            start = time.perf_counter()
            drain(lambda: _connect(db), "articles")
            return time.perf_counter() - start

        def reset() -> None:
            # TRUNCATE of an attached table deletes its records and queued keys (trigger);
            # vacuum so that every run starts from the same empty tables.
            conn.execute("TRUNCATE app_plain, app_attached, app_inline")
            for table in (
                "app_plain",
                "app_attached",
                "app_inline",
                "embedplat.records",
                "embedplat.chunks",
                "embedplat.attach_pending",
            ):
                conn.execute(f"VACUUM {table}")
            conn.execute("CHECKPOINT")

        def copy_into(table: str) -> float:
            start = time.perf_counter()
            with conn.cursor() as cur, cur.copy(f"COPY {table} ({COLUMNS}) FROM STDIN") as cp:
                for i in range(0, len(data), 1 << 20):
                    cp.write(data[i : i + (1 << 20)])
            return time.perf_counter() - start

        def insert_select(table: str) -> float:
            start = time.perf_counter()
            conn.execute(f"INSERT INTO {table} ({COLUMNS}) SELECT {COLUMNS} FROM bench_src")
            return time.perf_counter() - start

        bulk: dict[str, dict[str, list[float]]] = {}
        records_after: list[int] = []
        kinds = ("plain", "attached", "inline")
        for method, fn in (("copy", copy_into), ("insert_select", insert_select)):
            times: dict[str, list[float]] = {"plain": [], "attached": [], "inline": [], "drain": []}
            for run in range(runs):
                # Rotate which table goes first in each run.
                order = kinds[run % 3 :] + kinds[: run % 3]
                for which in order:
                    reset()
                    seconds = fn(f"app_{which}")
                    times[which].append(seconds)
                    if which == "attached":
                        records_after.append(records_of(cid))  # 0: keys queued
                        times["drain"].append(drain_seconds())
                        records_after.append(records_of(cid))
                    elif which == "inline":
                        records_after.append(records_of(inline_cid))
                    print(f"bulk {method} {which} run {run + 1}: {seconds:.3f} s")
                print(f"drain after bulk {method} run {run + 1}: {times['drain'][-1]:.3f} s")
            bulk[method] = times

        # Both tables full (same rows, records drained) for the one-row updates.
        reset()
        insert_select("app_plain")
        insert_select("app_attached")
        drain_seconds()
        conn.execute("VACUUM ANALYZE app_plain")
        conn.execute("VACUUM ANALYZE app_attached")

        def one_row_rounds(
            sql: str, make_params: Callable[[int], tuple[Any, ...]]
        ) -> list[dict[str, Any]]:
            rounds = []
            for _ in range(runs):
                lat: dict[str, list[float]] = {"plain": [], "attached": []}
                for i in range(updates):
                    params = make_params(rng.randrange(1, rows + 1))
                    order = ("plain", "attached") if i % 2 == 0 else ("attached", "plain")
                    for which in order:
                        start = time.perf_counter()
                        conn.execute(sql.format(table=f"app_{which}"), params)
                        lat[which].append(time.perf_counter() - start)
                p50 = {w: _ms_percentile(v, 50) for w, v in lat.items()}
                p95 = {w: _ms_percentile(v, 95) for w, v in lat.items()}
                rounds.append(
                    {
                        "plain_p50_ms": p50["plain"],
                        "attached_p50_ms": p50["attached"],
                        "plain_p95_ms": p95["plain"],
                        "attached_p95_ms": p95["attached"],
                        "added_p50_ms_computed": round(p50["attached"] - p50["plain"], 3),
                        "added_p95_ms_computed": round(p95["attached"] - p95["plain"], 3),
                    }
                )
            return rounds

        def new_body(_: int) -> str:
            return pairs[rng.randrange(len(pairs))][1] + f" (edit {rng.randrange(10**9)})"

        text_rounds = one_row_rounds(
            "UPDATE {table} SET body = %s WHERE id = %s", lambda key: (new_body(key), key)
        )
        print("text-column update rounds:", text_rounds)

        # The unattached column: count the work there is before and after, and keep the
        # records' row versions (xmin) of the rows touched.
        touched: list[int] = []

        def other_params(key: int) -> tuple[Any, ...]:
            touched.append(key)
            return (key,)

        def work_counts() -> dict[str, int]:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM embedplat.stale_records WHERE collection_id = %s),"
                " (SELECT count(*) FROM embedplat.embedding_queue),"
                " (SELECT max(updated_at)::text FROM embedplat.records WHERE collection_id = %s)",
                (cid, cid),
            ).fetchone()
            return {"stale_records": row[0], "queue_rows": row[1], "records_max_updated_at": row[2]}

        def record_versions(keys: list[int]) -> dict[str, str]:
            rows_ = conn.execute(
                "SELECT external_id, xmin::text FROM embedplat.records "
                "WHERE collection_id = %s AND external_id = ANY (%s)",
                (cid, [str(k) for k in keys]),
            ).fetchall()
            return dict(rows_)

        before_work = work_counts()
        sample = rng.sample(range(1, rows + 1), 2000)
        versions_before = record_versions(sample)
        other_rounds = one_row_rounds(
            "UPDATE {table} SET views = views + 1 WHERE id = %s", other_params
        )
        after_work = work_counts()
        # Every row touched, plus the sample taken before (most touched ids are in neither).
        versions_touched_after = record_versions(sorted(set(touched)))
        versions_sample_after = record_versions(sample)
        print("other-column update rounds:", other_rounds)

        profile = _trigger_profile(db, cid, rows, pairs, rng)

        return {
            "note": MACHINE_NOTE,
            "rows": rows,
            "source_table_bytes": src_bytes,
            "copy_bytes": len(data),
            "runs": runs,
            "bulk_note": (
                "attached: the default attachment (inline_rows 1,000), whose bulk statement "
                "queues its keys; drain: the following embedplat.attach_drain loop that writes "
                "their records (outside the app's transaction); inline: an attachment with "
                f"inline_rows {INLINE_EVERYTHING:,}, whose statement writes every record itself"
            ),
            "bulk": {method: _bulk_summary(t, rows) for method, t in bulk.items()},
            "records_after_each_attached_bulk": records_after,
            "goal_bulk_ratio": GOAL_BULK_RATIO,
            "updates_per_round": updates,
            "text_column_update": {
                "rounds": text_rounds,
                "added_p50_ms_computed": _spread([r["added_p50_ms_computed"] for r in text_rounds]),
                "added_p95_ms_computed": _spread([r["added_p95_ms_computed"] for r in text_rounds]),
                "goal_added_p50_ms": GOAL_TEXT_UPDATE_ADDED_P50_MS,
            },
            "other_column_update": {
                "rounds": other_rounds,
                "added_p50_ms_computed": _spread(
                    [r["added_p50_ms_computed"] for r in other_rounds]
                ),
                "added_p95_ms_computed": _spread(
                    [r["added_p95_ms_computed"] for r in other_rounds]
                ),
                "goal_added_p50_ms": GOAL_OTHER_UPDATE_ADDED_P50_MS,
                "work_before": before_work,
                "work_after": after_work,
                "rows_updated": len(touched),
                "distinct_rows_updated": len(set(touched)),
                "records_touched_xmin_changed": sum(
                    1
                    for k, v in versions_touched_after.items()
                    if k in versions_before and versions_before[k] != v
                ),
                "records_touched_xmin_compared": sum(
                    1 for k in versions_touched_after if k in versions_before
                ),
                "sample_records_xmin_changed": sum(
                    1 for k, v in versions_sample_after.items() if versions_before.get(k) != v
                ),
                "sample_records": len(versions_before),
                "no_new_work": before_work == after_work
                and all(versions_before.get(k) == v for k, v in versions_sample_after.items()),
            },
            "profile": profile,
        }


def _trigger_profile(
    db: str, cid: int, rows: int, pairs: list[tuple[str, str]], rng: random.Random
) -> dict[str, Any]:
    """Where a trigger call's time goes: function counters over a loop of one-row text
    updates and one 100,000-row INSERT ... SELECT, and the nested statements' plans of one
    of each (auto_explain). Measured after the timed runs: counting costs a little itself."""
    out: dict[str, Any] = {}
    n_updates = 300
    with _connect(db, options="-c track_functions=all") as conn, _connect(db) as reader:
        _flush_stats(conn)
        time.sleep(1.1)
        before = _function_stats(reader)
        start = time.perf_counter()
        for _ in range(n_updates):
            key = rng.randrange(1, rows + 1)
            conn.execute(
                "UPDATE app_attached SET body = %s WHERE id = %s",
                (pairs[rng.randrange(len(pairs))][1] + f" (p {rng.randrange(10**9)})", key),
            )
        loop_seconds = time.perf_counter() - start
        _flush_stats(conn)
        time.sleep(1.1)
        after = _function_stats(reader)
        out["one_row_text_updates"] = {
            "updates": n_updates,
            "client_ms_per_update": round(1000 * loop_seconds / n_updates, 4),
            "functions": _stats_delta(before, after),
        }

        # Isolate the suspected cost: rebuilding the statement's SQL from pg_attribute on
        # every call. Each is evaluated once per row of generate_series (a STABLE function
        # with a per-row argument is not cached across rows).
        reps = 2000
        for label, expr in (
            ("attach_sql_parts_keys_only", "embedplat.attach_sql_parts(a, true)"),
            ("attach_rows_sql", "embedplat.attach_rows_sql(a, 'new_rows s')"),
        ):
            start = time.perf_counter()
            conn.execute(
                f"SELECT count({expr}) FROM embedplat.attachments a, generate_series(1, %s) g "
                "WHERE a.collection_id = %s AND g > 0",
                (reps, cid),
            )
            out[f"{label}_ms_per_call"] = round(1000 * (time.perf_counter() - start) / reps, 4)

        conn.execute("TRUNCATE app_attached")  # re-filled below, in one statement
        conn.execute("VACUUM embedplat.records")
        _flush_stats(conn)
        time.sleep(1.1)
        before = _function_stats(reader)
        start = time.perf_counter()
        conn.execute(f"INSERT INTO app_attached ({COLUMNS}) SELECT {COLUMNS} FROM bench_src")
        bulk_seconds = time.perf_counter() - start
        _flush_stats(conn)
        time.sleep(1.1)
        after = _function_stats(reader)
        out["bulk_insert_select"] = {
            "rows": rows,
            "seconds": round(bulk_seconds, 3),
            "functions": _stats_delta(before, after),
        }

        # Plans of the trigger's nested statements, one statement of each kind.
        with _auto_explain(conn) as plans:
            key = rng.randrange(1, rows + 1)
            conn.execute(
                "UPDATE app_attached SET body = body || ' (explained)' WHERE id = %s", (key,)
            )
        out["one_row_text_update_statements"] = _plan_summary(plans)
        out["one_row_text_update_plan"] = _trigger_plan(plans)
        conn.execute("TRUNCATE app_attached")
        conn.execute("VACUUM embedplat.records")
        with _auto_explain(conn) as plans:
            conn.execute(f"INSERT INTO app_attached ({COLUMNS}) SELECT {COLUMNS} FROM bench_src")
        out["bulk_insert_select_statements"] = _plan_summary(plans)
        out["bulk_insert_select_plan"] = _trigger_plan(plans)
        out["explained_runs_note"] = (
            "auto_explain with timing inflates the durations of the explained runs; "
            "compare within a run, not with the timed runs"
        )

        # The floor of writing the same rows into records at all, in the app's transaction:
        # a plain INSERT into embedplat.records (no trigger, no derivation), rolled back.
        conn.execute(
            "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap) VALUES ('floor', %s, 200, 32)",
            (MODEL,),
        )
        floor_cid = _collection_id(conn, "floor")
        floor: list[float] = []
        for _ in range(3):
            with conn.transaction(force_rollback=True):
                start = time.perf_counter()
                conn.execute(
                    "INSERT INTO embedplat.records (collection_id, external_id, content, metadata) "
                    "SELECT %s, id::text, concat_ws(E'\\n\\n', title, body), "
                    "jsonb_build_object('author', author) FROM bench_src",
                    (floor_cid,),
                )
                floor.append(time.perf_counter() - start)
        conn.execute("DELETE FROM embedplat.collections WHERE id = %s", (floor_cid,))
        out["records_insert_floor_seconds"] = _spread(floor)
        out["records_insert_floor_note"] = (
            "a plain INSERT ... SELECT of the same rows straight into embedplat.records (its "
            "indexes, generated content hash, foreign key and NOTIFY trigger), rolled back: "
            "what any design that writes records in the app's transaction pays at least"
        )
    return out


def _bulk_summary(t: dict[str, list[float]], rows: int) -> dict[str, Any]:
    def ratio(kind: str) -> dict[str, Any]:
        return {
            "ratio_of_medians_computed": round(
                statistics.median(t[kind]) / statistics.median(t["plain"]), 3
            ),
            "ratio_per_run_computed": [
                round(a / p, 3) for a, p in zip(t[kind], t["plain"], strict=True)
            ],
        }

    return {
        "plain_seconds": _spread(t["plain"]),
        "attached_seconds": _spread(t["attached"]),
        "attached": ratio("attached"),
        "inline_seconds": _spread(t["inline"]),
        "inline": ratio("inline"),
        "drain_seconds": _spread(t["drain"]),
        "drain_rows_per_second_computed": _spread([rows / d for d in t["drain"]], 0),
    }


# -- back-fill ----------------------------------------------------------------------------------


class AppWriter(threading.Thread):
    """An app doing single-row writes in autocommit: updates of the attached text column of a
    random row and inserts of new rows, alternately, a few milliseconds apart; records how
    long each write took (the trigger's own work included)."""

    def __init__(self, db: str, rows: int, pairs: list[tuple[str, str]], first_new_id: int):
        super().__init__(daemon=True)
        self.db, self.rows, self.pairs = db, rows, pairs
        self.next_id = first_new_id
        self.stop_event = threading.Event()
        self.phase = "before"
        self.latencies: dict[str, list[float]] = {"before": [], "during": []}
        self.error: BaseException | None = None
        self.rng = random.Random(7)

    def run(self) -> None:
        try:
            with _connect(self.db) as conn:
                i = 0
                while not self.stop_event.is_set():
                    phase = self.phase
                    title, body = self.pairs[self.rng.randrange(len(self.pairs))]
                    start = time.perf_counter()
                    if i % 2 == 0:
                        conn.execute(
                            "UPDATE app_big SET body = %s WHERE id = %s",
                            (f"{body} (w {i})", self.rng.randrange(1, self.rows + 1)),
                        )
                    else:
                        conn.execute(
                            f"INSERT INTO app_big ({COLUMNS}) VALUES (%s, %s, %s, 'writer', 0)",
                            (self.next_id, title, body),
                        )
                        self.next_id += 1
                    self.latencies[phase].append(time.perf_counter() - start)
                    i += 1
                    time.sleep(0.005)
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def _write_stats(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"writes": 0}
    return {
        "writes": len(seconds),
        "p50_ms": _ms_percentile(seconds, 50),
        "p99_ms": _ms_percentile(seconds, 99),
        "max_ms": round(1000 * max(seconds), 3),
        "over_100_ms": sum(1 for s in seconds if s > 0.1),
    }


def backfill_part(
    server_url: str, pairs: list[tuple[str, str]], rows: int, runs: int, batches: tuple[int, ...]
) -> dict[str, Any]:
    with fresh_database(server_url) as db, _connect(db) as conn:
        _load_pairs(conn, pairs)
        conn.execute(APP_TABLE.format(name="app_big"))
        start = time.perf_counter()
        conn.execute(_fill_sql("app_big", 1, rows, len(pairs)))
        conn.execute("VACUUM ANALYZE app_big")
        fill_seconds = time.perf_counter() - start
        table_bytes = conn.execute("SELECT pg_total_relation_size('app_big')").fetchone()[0]
        print(f"app_big: {rows:,} rows in {fill_seconds:.1f} s, {table_bytes / 1e6:.0f} MB")
        runs_out: list[dict[str, Any]] = []
        next_new_id = 10 * rows + 1
        # Interleaved: 1000, 5000, 5000, 1000, 1000, 5000, ...
        order = [batches[(r + (r // 2)) % len(batches)] for r in range(runs * len(batches))]
        for run_no, batch in enumerate(order, 1):
            # Start from no collection at all: the only one in this database, so its records
            # (and nothing else) go with a TRUNCATE.
            if conn.execute("SELECT 1 FROM embedplat.attachments").fetchone():
                conn.execute("SELECT embedplat.detach('big')")
            conn.execute("TRUNCATE embedplat.records CASCADE")
            conn.execute("DELETE FROM embedplat.collections WHERE name = 'big'")
            conn.execute("VACUUM app_big")
            conn.execute("CHECKPOINT")
            with Platform(db, settings()) as platform:
                platform.attach(
                    "big",
                    "public.app_big",
                    text_columns=["title", "body"],
                    metadata_columns=["author"],
                    model=MODEL,
                    backfill=False,
                )
            writer = AppWriter(db, rows, pairs, next_new_id)
            writer.start()
            time.sleep(3.0)  # the writer alone: its latencies without a back-fill
            marks: list[tuple[float, int, int]] = []
            _flush_stats(conn)
            time.sleep(1.1)
            stats_before = _function_stats(conn)
            writer.phase = "during"
            start = time.perf_counter()
            report = backfill(
                lambda: psycopg.connect(libpq_url(db), options="-c track_functions=all"),
                "big",
                batch_size=batch,
                progress=lambda r, marks=marks: marks.append(
                    (time.perf_counter(), r.rows_read, r.records_checked)
                ),
            )
            seconds = time.perf_counter() - start
            writer.stop_event.set()
            writer.join()
            if writer.error is not None:
                raise RuntimeError(f"the app writer failed: {writer.error!r}")
            next_new_id = writer.next_id
            time.sleep(1.1)
            stats_after = _function_stats(conn)
            forward_end = max((t for t, _, checked in marks if checked == 0), default=start)
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM app_big),"
                " (SELECT count(*) FROM embedplat.records r JOIN embedplat.collections c"
                "  ON c.id = r.collection_id WHERE c.name = 'big')"
            ).fetchone()
            result = {
                "batch_size": batch,
                "seconds": round(seconds, 3),
                "forward_seconds": round(forward_end - start, 3),
                "prune_seconds": round(seconds - (forward_end - start), 3),
                "rows_read": report.rows_read,
                "records_inserted": report.records_inserted,
                "records_checked": report.records_checked,
                "batches": report.batches,
                "retries": report.retries,
                "rows_per_second_computed": round(report.rows_read / seconds),
                "forward_rows_per_second_computed": round(
                    report.rows_read / max(forward_end - start, 1e-9)
                ),
                "app_writes_before": _write_stats(writer.latencies["before"]),
                "app_writes_during": _write_stats(writer.latencies["during"]),
                "table_rows_at_end": counts[0],
                "records_at_end": counts[1],
                "functions": _stats_delta(stats_before, stats_after),
            }
            print(
                f"backfill run {run_no}: {json.dumps({k: v for k, v in result.items() if k != 'functions'})}"
            )
            runs_out.append(result)
        by_batch = {}
        for batch in batches:
            mine = [r for r in runs_out if r["batch_size"] == batch]
            during = [w for r in mine for w in [r["app_writes_during"]] if w["writes"]]
            by_batch[str(batch)] = {
                "rows_per_second_computed": _spread(
                    [float(r["rows_per_second_computed"]) for r in mine], 0
                ),
                "seconds": _spread([r["seconds"] for r in mine]),
                "app_write_max_ms": max(w["max_ms"] for w in during) if during else None,
                "app_write_p99_ms": _spread([w["p99_ms"] for w in during]) if during else None,
                "app_writes_over_100_ms": sum(w["over_100_ms"] for w in during),
                "records_equal_table_every_run": all(
                    r["records_at_end"] == r["table_rows_at_end"] for r in mine
                ),
            }
        return {
            "note": MACHINE_NOTE,
            "rows": rows,
            "table_bytes": table_bytes,
            "fill_seconds": round(fill_seconds, 1),
            "default_batch": DEFAULT_BACKFILL_BATCH,
            "goal_rows_per_second": GOAL_BACKFILL_ROWS_PER_SECOND,
            "goal_app_write_max_ms": GOAL_APP_WRITE_MAX_MS,
            "by_batch": by_batch,
            "runs": runs_out,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller tables, fewer updates")
    parser.add_argument("--only", choices=PARTS, action="append")
    args = parser.parse_args()
    parts = tuple(args.only or PARTS)
    pairs = _pairs()
    new: dict[str, dict[str, Any]] = {}
    with server() as url:
        if "overhead" in parts:
            rows = 20_000 if args.quick else 100_000
            new["overhead"] = overhead(url, pairs, rows, runs=3, updates=100 if args.quick else 400)
        if "backfill" in parts:
            rows = 100_000 if args.quick else 1_000_000
            new["backfill"] = backfill_part(
                url, pairs, rows, runs=3, batches=(DEFAULT_BACKFILL_BATCH, 5000)
            )
    print(write_parts("attach", new, PARTS))


if __name__ == "__main__":
    main()
