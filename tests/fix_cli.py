"""The CLI as a subprocess: ``run`` an ``embedplat`` command, ``_env`` for its environment;
``documented_keys`` reads the JSON keys docs/cli.md documents for a command.

Loaded as a pytest plugin from ``tests/conftest.py`` (for the ``url_env`` fixture); test modules
import ``run`` and ``_env`` from here instead of from each other.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fix_embedders import TEST_BACKEND, plugin_env

_CLI_DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def documented_keys(section: str) -> set[str]:
    """The keys in the first column of the table under docs/cli.md's ``### `SECTION```."""
    text = _CLI_DOC.read_text(encoding="utf-8")
    start = text.index(f"### `{section}`")
    end = text.find("\n### ", start + 1)
    keys: set[str] = set()
    for line in text[start:end].splitlines():
        if line.startswith("| `"):
            keys |= set(re.findall(r"`([a-z_]+)`", line.split(" | ")[0]))
    return keys


def run(
    args: list[str], env: dict[str, str], stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``embedplat ARGS`` in a fresh interpreter; with ``check``, fail on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "embedplat.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``EMBEDPLAT_*`` setting, plus ``extra``.

    The test embedders' plugin is always on, so ``test-hash-N`` models work in the CLI.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDPLAT_")}
    env["HF_HUB_OFFLINE"] = "1"
    env["EMBEDPLAT_BACKEND"] = TEST_BACKEND  # see tests/fix_embedders.py
    env.update(plugin_env())
    env.update(extra)
    return env


@pytest.fixture
def url_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """CLI environment pointing at the test's fresh database and a private home folder."""
    return _env(EMBEDPLAT_DATABASE_URL=db_url, EMBEDPLAT_HOME=str(tmp_path / "home"))
