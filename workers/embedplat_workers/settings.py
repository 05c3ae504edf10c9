"""Worker settings: embedplat's own :class:`~embedplat.config.Settings` plus the knobs that only
the Celery side has. Read once, at worker (or beat, or listener) start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from embedplat.config import Settings, env_flag, env_float, env_int

DEFAULT_SWEEP_SECONDS = 30.0
DEFAULT_TASK_ROUNDS = 4
DEFAULT_MAX_PARALLEL_TASKS = 16
DEFAULT_NOTIFY_DEBOUNCE_SECONDS = 0.5
DEFAULT_NOTIFY_MAX_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the workers, beat and the change listener read from their environment.

    ==================================== ===================================================
    ``EMBEDPLAT_SWEEP_SECONDS``          beat's sweep interval (default 30; 0 disables it)
    ``EMBEDPLAT_TASK_ROUNDS``            claim/embed rounds per sync task (default 4)
    ``EMBEDPLAT_MAX_PARALLEL_TASKS``     sync tasks working on one collection at once
                                         (default 16)
    ``EMBEDPLAT_NOTIFY_DEBOUNCE_SECONDS`` quiet time the listener waits for (default 0.5)
    ``EMBEDPLAT_BEAT_LISTENER``          ``0`` keeps beat from running the listener
    ==================================== ===================================================

    Plus everything :meth:`embedplat.config.Settings.from_env` reads (database and broker URL,
    batch size, lease, attempts, device, plugins), parsed by the same functions.
    """

    base: Settings = field(default_factory=Settings)
    sweep_seconds: float = DEFAULT_SWEEP_SECONDS
    task_rounds: int = DEFAULT_TASK_ROUNDS
    max_parallel_tasks: int = DEFAULT_MAX_PARALLEL_TASKS
    notify_debounce_s: float = DEFAULT_NOTIFY_DEBOUNCE_SECONDS
    notify_max_wait_s: float = DEFAULT_NOTIFY_MAX_WAIT_SECONDS
    beat_listener: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """Build settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        return cls(
            base=Settings.from_env(env),
            sweep_seconds=env_float(env, "EMBEDPLAT_SWEEP_SECONDS", DEFAULT_SWEEP_SECONDS),
            task_rounds=env_int(env, "EMBEDPLAT_TASK_ROUNDS", DEFAULT_TASK_ROUNDS, minimum=1),
            max_parallel_tasks=env_int(
                env, "EMBEDPLAT_MAX_PARALLEL_TASKS", DEFAULT_MAX_PARALLEL_TASKS, minimum=1
            ),
            notify_debounce_s=env_float(
                env, "EMBEDPLAT_NOTIFY_DEBOUNCE_SECONDS", DEFAULT_NOTIFY_DEBOUNCE_SECONDS
            ),
            beat_listener=env_flag(env, "EMBEDPLAT_BEAT_LISTENER", default=True),
        )
