"""The real model for tests marked ``model``: a unit test without it is skipped, any other fails.

Loaded as a pytest plugin from ``tests/conftest.py``. The integration, worker and migration
tests are what shows the product works with its default model, so a missing ``[model]`` extra
must not pass there as a row of quiet skips: it fails each such test with the reason and the
install command. Deselecting them is a choice made on the command line (``-m "not model"``).
"""

from __future__ import annotations

import pytest

from embedplat.config import DEFAULT_MODEL
from embedplat.embedders import ModelUnavailableError, locate_model

__all__ = ["model_unavailable"]


def model_unavailable() -> str | None:
    """Why the default model cannot be used here (None: it can), found without loading it."""
    try:
        locate_model(DEFAULT_MODEL)
    except ModelUnavailableError as exc:
        return str(exc)
    return None


def _is_unit_test(item: pytest.Item) -> bool:
    try:
        folders = item.path.relative_to(item.config.rootpath).parts[:-1]
    except ValueError:
        return False
    return "unit" in folders


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("model") is None:
        return
    reason = model_unavailable()
    if reason is None:
        return
    message = (
        f"this test needs the real model {DEFAULT_MODEL}, which cannot be used here: {reason}. "
        "Install the [model] extra (scripts/test does), or leave these tests out explicitly "
        "with -m 'not model'"
    )
    if _is_unit_test(item):
        pytest.skip(message)
    pytest.fail(message, pytrace=False)
