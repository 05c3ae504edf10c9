"""The ORM selectables check query vectors as every other query path does, before any query."""

from __future__ import annotations

import pytest

from embedplat.errors import InvalidInputError
from embedplat.orm import hybrid_search_fn, search_fn


@pytest.mark.parametrize(
    ("vector", "problem"),
    [
        ([0.0, 0.0, 0.0], "all zeros"),
        ([1e-30, 0.0, 0.0], "all zeros"),  # its squared length underflows single precision
        ([float("nan"), 1.0], "NaN"),
        ([], "non-empty"),
    ],
)
def test_unusable_query_vectors_are_refused(vector: list[float], problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem):
        search_fn("docs", vector, 5)
    with pytest.raises(InvalidInputError, match=problem):
        hybrid_search_fn("docs", "words", vector, 5)


def test_a_usable_vector_builds_a_selectable() -> None:
    assert search_fn("docs", [0.5, 0.5, 0.0], 5) is not None
