"""Settings read from EMBEDPLAT_* environment variables.

Settings are built at the edges (CLI, worker start, tests) and passed down; nothing in the
library reads the environment at import time.
"""

from __future__ import annotations

import os
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


@dataclass(frozen=True)
class Settings:
    """Everything embedplat needs from its environment."""

    database_url: str | None = None
    home: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("embedplat")))
    batch_size: int = DEFAULT_BATCH_SIZE
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    device: str | None = None
    broker_url: str = "redis://127.0.0.1:6379/0"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        home = env.get("EMBEDPLAT_HOME")
        kwargs: dict[str, object] = {
            "database_url": env.get("EMBEDPLAT_DATABASE_URL") or None,
            "device": env.get("EMBEDPLAT_DEVICE") or None,
        }
        if home:
            kwargs["home"] = Path(home).expanduser()
        if env.get("EMBEDPLAT_BROKER_URL"):
            kwargs["broker_url"] = env["EMBEDPLAT_BROKER_URL"]
        for name, key in (
            ("batch_size", "EMBEDPLAT_BATCH_SIZE"),
            ("lease_seconds", "EMBEDPLAT_LEASE_SECONDS"),
            ("max_attempts", "EMBEDPLAT_MAX_ATTEMPTS"),
        ):
            if env.get(key):
                kwargs[name] = _positive_int(key, env[key])
        return cls(**kwargs)  # type: ignore[arg-type]


def _positive_int(key: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{key} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{key} must be positive, got {value}")
    return value
