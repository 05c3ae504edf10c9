"""Celery side of embedplat: thin tasks over :mod:`embedplat.sync`, beat schedule, NOTIFY listener.

* ``embedplat_workers.app``: the Celery app (``celery -A embedplat_workers.app worker``, or
  ``embedplat worker``); configuration from ``EMBEDPLAT_*`` variables (see
  :class:`embedplat_workers.settings.WorkerSettings`).
* ``embedplat_workers.tasks``: ``embedplat.sync_collection``, ``embedplat.sweep``,
  ``embedplat.reconcile``, ``embedplat.index_upkeep``.
* ``embedplat_workers.beat``: the beat schedule.
* ``embedplat_workers.listener``: LISTEN/NOTIFY → debounced sync tasks
  (``python -m embedplat_workers.listener``, or inside beat).

Nothing is imported here, so importing a submodule does not configure Celery as a side effect.
See docs/deploy.md for running it and docs/scaling.md for sizing.
"""
