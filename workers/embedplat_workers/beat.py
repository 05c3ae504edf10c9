"""Beat schedule: the periodic sweep, the nightly reconcile, hourly index upkeep.

Run exactly one beat per deployment (``celery -A embedplat_workers.app beat`` or
``embedplat worker --beat``). Two by mistake only send each task twice: every task asks the
database what is stale and claims it with ``FOR UPDATE SKIP LOCKED``, so nothing is embedded
twice (tests/workers prove it).
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from embedplat_workers.settings import WorkerSettings

SWEEP_TASK = "embedplat.sweep"
SYNC_TASK = "embedplat.sync_collection"
RECONCILE_TASK = "embedplat.reconcile"
INDEX_UPKEEP_TASK = "embedplat.index_upkeep"


def beat_schedule(settings: WorkerSettings) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for ``settings`` (times are UTC)."""
    schedule: dict[str, dict[str, Any]] = {
        # Drift repair the fast path cannot see (rows edited behind embedplat's back).
        "embedplat-reconcile": {
            "task": RECONCILE_TASK,
            "schedule": crontab(hour=3, minute=0),
        },
        # Build missing/invalid HNSW indexes; sync tasks also ask for this after a backlog.
        "embedplat-index-upkeep": {
            "task": INDEX_UPKEEP_TASK,
            "schedule": crontab(minute=17),
        },
    }
    if settings.sweep_seconds > 0:
        # The polling fallback behind NOTIFY. A sweep not started within one interval is
        # dropped (`expires`): the next one does the same job, so they never pile up while the
        # workers are busy.
        schedule["embedplat-sweep"] = {
            "task": SWEEP_TASK,
            "schedule": settings.sweep_seconds,
            "options": {"expires": settings.sweep_seconds},
        }
    return schedule
