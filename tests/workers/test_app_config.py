"""The Celery app's settings, the beat schedule, worker settings, the CLI entry, task slots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from celery.schedules import crontab
from typer.testing import CliRunner

from embedplat.api import Platform
from embedplat.cli import app as cli_app
from embedplat.config import Settings
from embedplat.db.connection import libpq_url
from embedplat.errors import ConfigurationError
from embedplat_workers.app import (
    LONG_TIME_LIMIT_S,
    SYNC_SOFT_TIME_LIMIT_S,
    SYNC_TIME_LIMIT_S,
    VISIBILITY_TIMEOUT_S,
    celery_config,
    create_app,
)
from embedplat_workers.settings import WorkerSettings


def _settings(**env: str) -> WorkerSettings:
    return WorkerSettings.from_env({"EMBEDPLAT_BROKER_URL": "redis://broker:6379/3", **env})


def test_celery_settings_fit_long_idempotent_tasks() -> None:
    conf = celery_config(_settings())
    assert conf["broker_url"] == "redis://broker:6379/3"
    assert conf["task_ignore_result"] is True and conf["result_backend"] is None
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_connection_retry_on_startup"] is True
    assert conf["broker_transport_options"]["visibility_timeout"] == VISIBILITY_TIMEOUT_S
    assert SYNC_SOFT_TIME_LIMIT_S < SYNC_TIME_LIMIT_S <= VISIBILITY_TIMEOUT_S / 5


def test_tasks_are_registered_and_long_ones_ack_early() -> None:
    from embedplat_workers import tasks

    app = tasks.app
    names = {
        "embedplat.sync_collection",
        "embedplat.sweep",
        "embedplat.reconcile",
        "embedplat.index_upkeep",
    }
    assert names <= set(app.tasks)
    for name in ("embedplat.reconcile", "embedplat.index_upkeep"):
        # They may outlive the visibility timeout, so they must not rely on late acks.
        assert app.tasks[name].acks_late is False
        assert app.tasks[name].time_limit == LONG_TIME_LIMIT_S
    sync = app.tasks["embedplat.sync_collection"]
    assert sync.acks_late is True
    assert psycopg.OperationalError in sync.autoretry_for


def test_beat_schedule_follows_settings() -> None:
    schedule = create_app(_settings()).conf.beat_schedule
    assert schedule["embedplat-sweep"]["schedule"] == 30.0
    assert schedule["embedplat-sweep"]["task"] == "embedplat.sweep"
    assert schedule["embedplat-reconcile"]["schedule"] == crontab(hour=3, minute=0)
    assert schedule["embedplat-index-upkeep"]["schedule"] == crontab(minute=17)
    assert (
        create_app(_settings(EMBEDPLAT_SWEEP_SECONDS="5")).conf.beat_schedule["embedplat-sweep"][
            "schedule"
        ]
        == 5.0
    )
    assert (
        "embedplat-sweep"
        not in create_app(_settings(EMBEDPLAT_SWEEP_SECONDS="0")).conf.beat_schedule
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("EMBEDPLAT_SWEEP_SECONDS", "soon"),
        ("EMBEDPLAT_SWEEP_SECONDS", "-1"),
        ("EMBEDPLAT_TASK_ROUNDS", "0"),
        ("EMBEDPLAT_MAX_PARALLEL_TASKS", "1.5"),
        ("EMBEDPLAT_BEAT_LISTENER", "maybe"),
    ],
)
def test_bad_worker_settings_are_refused_with_the_variable_named(key: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=key):
        WorkerSettings.from_env({key: value})


def test_embedplat_never_imports_celery() -> None:
    code = (
        "import sys, embedplat, embedplat.cli, embedplat.api, embedplat.sync; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', "
        "'embedplat_workers')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_worker_command_checks_its_options() -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app, ["worker", "--concurrency", "0"])
    assert result.exit_code == 1 and "--concurrency must be at least 1" in result.output
    result = runner.invoke(cli_app, ["worker", "--loglevel", "chatty"])
    assert result.exit_code == 1 and "--loglevel" in result.output


def test_task_slots_cap_and_count_the_tasks_of_a_collection(
    platform: Platform, db_url: str, tmp_path: Path
) -> None:
    from embedplat_workers.tasks import Runtime, collection_work, task_slot

    platform.create_collection("docs", model="test-hash-64")
    platform.create_collection("other", model="test-hash-64")
    platform.ingest("docs", [{"id": "a", "text": "some text"}])
    settings = WorkerSettings(
        base=Settings(database_url=db_url, home=tmp_path), max_parallel_tasks=2
    )
    rt = Runtime(settings, db_url)

    def work() -> dict[str, tuple[int, int]]:
        with psycopg.connect(libpq_url(db_url)) as conn:
            found = collection_work(conn, cap=10, max_parallel=2)
        return {w.name: (w.claimable, w.running_tasks) for w in found}

    assert work() == {"docs": (1, 0), "other": (0, 0)}
    with task_slot(rt, "docs") as first, task_slot(rt, "docs") as second:
        assert (first, second) == (0, 1)
        assert work()["docs"] == (1, 2)
        with task_slot(rt, "docs") as third:
            assert third is None  # every slot taken: this task would end its chain
        with task_slot(rt, "other") as elsewhere:
            assert elsewhere == 0  # slots are per collection
    assert work()["docs"] == (1, 0)  # released on exit
    # A killed process's slot frees itself: its session ends with its connection.
    conn = psycopg.connect(libpq_url(db_url), autocommit=True)
    conn.execute(
        "SELECT pg_advisory_lock(7240600, (SELECT id FROM embedplat.collections "
        "WHERE name = 'docs'))"
    )
    assert work()["docs"] == (1, 1)
    conn.close()
    assert work()["docs"] == (1, 0)
