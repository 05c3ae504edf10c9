"""Waiting for an outcome instead of sleeping: tests poll for what they expect to happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout.

    ``timeout`` is a safety net for a hung test, not a measurement: give it minutes of margin
    over the expected time, because these machines run several test sessions at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
