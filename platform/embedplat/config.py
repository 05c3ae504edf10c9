"""Settings read from EMBEDPLAT_* environment variables, and the one parser for their values.

Settings are built at the edges (CLI, worker start, tests) and passed down; nothing in the
library reads the environment at import time. :func:`env_int`, :func:`env_float` and
:func:`env_flag` (and :func:`env_device`) are the parsers every ``from_env`` uses (the workers' settings included), so a
bad value is refused the same way, with the variable named, wherever it is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from embedplat.errors import ConfigurationError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_CHUNK_TOKENS = 200
DEFAULT_CHUNK_OVERLAP = 32
DEFAULT_BATCH_SIZE = 64
DEFAULT_LEASE_SECONDS = 300
DEFAULT_MAX_ATTEMPTS = 5

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
PLUGINS_VARIABLE = "EMBEDPLAT_PLUGINS"
DEVICE_VARIABLE = "EMBEDPLAT_DEVICE"
BACKEND_VARIABLE = "EMBEDPLAT_BACKEND"
#: Threads of the ONNX Runtime / OpenVINO backends (embedplat.embedders.runtime).
THREADS_VARIABLE = "EMBEDPLAT_THREADS"
#: What ``EMBEDPLAT_DEVICE`` accepts (unset: the embedder backend chooses).
DEVICE_CHOICES = "cpu, cuda, cuda:N (N a GPU number) or mps"


def default_home() -> Path:
    """Where the embedded server and other local state live unless ``EMBEDPLAT_HOME`` says."""
    return Path(platformdirs.user_data_dir("embedplat"))


@dataclass(frozen=True)
class Settings:
    """Everything embedplat needs from its environment.

    ``plugins``: modules that register embedder providers when imported (see
    :mod:`embedplat.embedders`); :meth:`from_env` imports them, so every program that reads its
    settings from the environment (the CLI, the workers, ``Platform.connect()``) knows the same
    models.
    """

    # Not in repr: a URL may carry a password (see db.connection.redact for messages).
    database_url: str | None = field(default=None, repr=False)
    home: Path = field(default_factory=default_home)
    batch_size: int = DEFAULT_BATCH_SIZE
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    device: str | None = None
    broker_url: str = field(default=DEFAULT_BROKER_URL, repr=False)
    plugins: tuple[str, ...] = ()
    backend: str | None = None
    """The backend of new collections' models (``EMBEDPLAT_BACKEND``; see
    :mod:`embedplat.embedders.backends`); None: each model's measured default
    (``backends.default_backend_of``). A model name that says its backend keeps it."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: the process environment).

        Imports the modules named in ``EMBEDPLAT_PLUGINS`` (comma-separated), as pytest does
        with ``PYTEST_PLUGINS``: this is the edge where a program learns its configuration.
        """
        env = os.environ if env is None else env
        home = env.get("EMBEDPLAT_HOME")
        settings = cls(
            database_url=env.get("EMBEDPLAT_DATABASE_URL") or None,
            home=Path(home).expanduser() if home else default_home(),
            batch_size=env_int(env, "EMBEDPLAT_BATCH_SIZE", DEFAULT_BATCH_SIZE, minimum=1),
            lease_seconds=env_int(env, "EMBEDPLAT_LEASE_SECONDS", DEFAULT_LEASE_SECONDS, minimum=1),
            max_attempts=env_int(env, "EMBEDPLAT_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, minimum=1),
            device=env_device(env, DEVICE_VARIABLE),
            broker_url=env.get("EMBEDPLAT_BROKER_URL") or DEFAULT_BROKER_URL,
            plugins=tuple(p for p in re.split(r"[\s,]+", env.get(PLUGINS_VARIABLE, "")) if p),
            backend=env_backend(env, BACKEND_VARIABLE),
        )
        if settings.plugins:
            # Imported here, not at module level: embedders import this module.
            from embedplat.embedders import load_plugins

            load_plugins(settings.plugins, variable=PLUGINS_VARIABLE)
        return settings


def env_int(env: Mapping[str, str], key: str, default: int, *, minimum: int = 0) -> int:
    """Whole number in ``env[key]`` (``default`` when unset or blank), at least ``minimum``."""
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{key} must be a whole number, got {raw!r}") from None
    _check_minimum(key, raw, value, minimum)
    return value


def env_device(env: Mapping[str, str], key: str) -> str | None:
    """A torch device name in ``env[key]`` (see :data:`DEVICE_CHOICES`), None when unset.

    Checked here, before any model loads: otherwise torch's error surfaces as "cannot load
    embedding model", which hides the variable at fault.
    """
    raw = env.get(key, "").strip()
    if not raw:
        return None
    prefix, colon, number = raw.partition(":")
    numbered = prefix == "cuda" and colon and number.isascii() and number.isdigit()
    if raw in ("cpu", "cuda", "mps") or numbered:
        return raw
    raise ConfigurationError(
        f"{key} must be {DEVICE_CHOICES}, got {raw!r}; unset it to choose automatically"
    )


def env_backend(env: Mapping[str, str], key: str) -> str | None:
    """A backend name in ``env[key]`` (one of embedplat.embedders.backends.BACKENDS), None
    when unset (each model's measured default)."""
    # Imported here: the embedders import this module.
    from embedplat.embedders.backends import BACKENDS

    raw = env.get(key, "").strip()
    if not raw:
        return None
    if raw not in BACKENDS:
        raise ConfigurationError(f"{key} must be one of {', '.join(BACKENDS)}, got {raw!r}")
    return raw


def env_float(env: Mapping[str, str], key: str, default: float, *, minimum: float = 0.0) -> float:
    """Number in ``env[key]`` (``default`` when unset or blank), at least ``minimum``."""
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{key} must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigurationError(f"{key} must be a finite number, got {raw!r}")
    _check_minimum(key, raw, value, minimum)
    return value


def env_flag(env: Mapping[str, str], key: str, *, default: bool) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` in ``env[key]``; ``default`` when unset."""
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{key} must be 1 or 0, got {raw!r}")


def _check_minimum(key: str, raw: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ConfigurationError(f"{key} must be at least {minimum:g}, got {raw!r}")
