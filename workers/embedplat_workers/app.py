"""The Celery application: ``celery -A embedplat_workers.app worker`` (or `embedplat worker`).

Everything here is configuration. The broker comes from ``EMBEDPLAT_BROKER_URL`` (Redis or
RabbitMQ); there is no result backend, because no one waits for a task's result: the database
is the source of truth for what is stale and what is done. Messages carry a collection name and
nothing else, so a duplicated message costs one no-op task and a lost one is made good by the
next sweep or change notification.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from celery import Celery
from celery.signals import beat_init, worker_init

from embedplat_workers.beat import beat_schedule
from embedplat_workers.settings import WorkerSettings

log = logging.getLogger(__name__)

# Celery warns on every broker reconnect that the default of
# worker_cancel_long_running_tasks_on_connection_loss will change in 6.0; we set it explicitly
# (see celery_config), so the warning says nothing here.
warnings.filterwarnings(
    "ignore", message=r"\s*In Celery 5\.1 we introduced an optional breaking change"
)

QUEUE = "embedplat"
# How long Redis keeps an unacknowledged (late-ack) message before handing it to another worker.
# Every task's hard time limit and every countdown stays far below it, so a task that is still
# running is never delivered twice by the broker.
VISIBILITY_TIMEOUT_S = 3600
# A sync task is a bounded batch (EMBEDPLAT_TASK_ROUNDS claim/embed rounds): seconds on a GPU,
# a minute at most on a slow CPU. The soft limit raises inside the task so it can hand its
# collection to a follow-up task; the hard limit kills a wedged process.
SYNC_SOFT_TIME_LIMIT_S = 300
SYNC_TIME_LIMIT_S = 360
# Index builds and reconcile passes scale with the collection, not with a batch: they get hours,
# and acknowledge on receipt instead (see tasks.py), so the visibility timeout does not apply.
LONG_SOFT_TIME_LIMIT_S = 4 * 3600
LONG_TIME_LIMIT_S = LONG_SOFT_TIME_LIMIT_S + 300


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """The Celery settings, each with the reason it has this value."""
    return {
        "broker_url": settings.base.broker_url,
        # Nobody reads results; the database says what is done.
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        # Ack after the task ran, so a worker dying mid-task leaves the message to be redelivered.
        # Safe because every task is idempotent: the database's claims decide who embeds what.
        "task_acks_late": True,
        # If the process running a task is killed (SIGKILL, OOM), requeue its message instead of
        # acknowledging it as failed (late acks alone would ack it).
        "task_reject_on_worker_lost": True,
        # Tasks are long and uneven; a worker reserving several would starve its idle peers.
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": SYNC_SOFT_TIME_LIMIT_S,
        "task_time_limit": SYNC_TIME_LIMIT_S,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        # Wait for the broker at start (compose starts everything at once) and after losing it.
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        # A task publishing its follow-up rides out a short broker restart instead of failing.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 20,
            "interval_start": 0.5,
            "interval_step": 0.5,
            "interval_max": 3.0,
        },
        # On broker connection loss, let running tasks finish rather than kill them: they hold
        # database leases, and their results are stored by compare-and-set whatever the broker
        # does; killing them would only strand their claims until the leases expire.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # Workers report task events so Flower can show them (`celery -A ... flower`).
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "beat_schedule": beat_schedule(settings),
    }


def create_app(settings: WorkerSettings | None = None) -> Celery:
    """A Celery app for ``settings`` (default: from the environment) with embedplat's tasks."""
    settings = settings or WorkerSettings.from_env()
    celery = Celery("embedplat", include=["embedplat_workers.tasks"])
    celery.conf.update(celery_config(settings))
    return celery


#: What `celery -A embedplat_workers.app` finds. Configured from the environment when the worker,
#: beat or listener process imports it: that is this program's edge.
worker_settings = WorkerSettings.from_env()
app = create_app(worker_settings)


def _resolve_database_at_start(**_: object) -> None:
    # Resolve (and for the embedded server, start) the database once, in the main process, so
    # prefork children inherit the URL and a wrong URL shows up at start, not at the first task.
    from embedplat_workers.tasks import runtime

    runtime()


def _start_listener_with_beat(sender: object, **_: object) -> None:
    # The beat process is the deployment's one scheduler, so it is also where the NOTIFY
    # listener runs (EMBEDPLAT_BEAT_LISTENER=0 to run `python -m embedplat_workers.listener`
    # separately instead).
    if not worker_settings.beat_listener:
        return
    from embedplat_workers.listener import start_listener_thread

    start_listener_thread(app, worker_settings)


# weak=False: the handlers are module functions; connected by call because Celery is untyped.
worker_init.connect(_resolve_database_at_start, weak=False)
beat_init.connect(_start_listener_with_beat, weak=False)
