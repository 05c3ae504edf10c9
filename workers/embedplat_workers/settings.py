"""Worker settings: embedplat's own :class:`~embedplat.config.Settings` plus the knobs that only
the Celery side has. Read once, at worker (or beat, or listener) start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from embedplat.config import Settings
from embedplat.errors import ConfigurationError

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
    ``EMBEDPLAT_TEST_EMBED_LOG``         test hook: append every embedded text to this file
    ``EMBEDPLAT_TEST_EMBED_DELAY``       test hook: sleep this long in every model call
    ==================================== ===================================================

    Plus everything :meth:`embedplat.config.Settings.from_env` reads (database and broker URL,
    batch size, lease, attempts, device).
    """

    base: Settings = field(default_factory=Settings)
    sweep_seconds: float = DEFAULT_SWEEP_SECONDS
    task_rounds: int = DEFAULT_TASK_ROUNDS
    max_parallel_tasks: int = DEFAULT_MAX_PARALLEL_TASKS
    notify_debounce_s: float = DEFAULT_NOTIFY_DEBOUNCE_SECONDS
    notify_max_wait_s: float = DEFAULT_NOTIFY_MAX_WAIT_SECONDS
    beat_listener: bool = True
    # Test hooks (documented in docs/deploy.md): they make a worker's model calls observable and
    # slow, so tests can prove exactly-once embedding and kill a worker mid-batch.
    test_embed_log: Path | None = None
    test_embed_delay_s: float = 0.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """Build settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        log = env.get("EMBEDPLAT_TEST_EMBED_LOG")
        return cls(
            base=Settings.from_env(env),
            sweep_seconds=_number(env, "EMBEDPLAT_SWEEP_SECONDS", DEFAULT_SWEEP_SECONDS),
            task_rounds=int(
                _number(env, "EMBEDPLAT_TASK_ROUNDS", DEFAULT_TASK_ROUNDS, whole=True, minimum=1)
            ),
            max_parallel_tasks=int(
                _number(
                    env,
                    "EMBEDPLAT_MAX_PARALLEL_TASKS",
                    DEFAULT_MAX_PARALLEL_TASKS,
                    whole=True,
                    minimum=1,
                )
            ),
            notify_debounce_s=_number(
                env, "EMBEDPLAT_NOTIFY_DEBOUNCE_SECONDS", DEFAULT_NOTIFY_DEBOUNCE_SECONDS
            ),
            beat_listener=_flag(env, "EMBEDPLAT_BEAT_LISTENER", default=True),
            test_embed_log=Path(log) if log else None,
            test_embed_delay_s=_number(env, "EMBEDPLAT_TEST_EMBED_DELAY", 0.0),
        )


def _number(
    env: Mapping[str, str],
    key: str,
    default: float,
    *,
    whole: bool = False,
    minimum: float = 0.0,
) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ConfigurationError(f"{key} must be {kind}, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{key} must be at least {minimum:g}, got {raw!r}")
    return float(value)


def _flag(env: Mapping[str, str], key: str, *, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{key} must be 1 or 0, got {raw!r}")
