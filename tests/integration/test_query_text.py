"""Library callers get the CLI's query-text checks: blank, NUL and lone-surrogate queries are
refused with InvalidInputError before anything is embedded or sent."""

from __future__ import annotations

import pytest

from embedplat.api import Platform
from embedplat.errors import InvalidInputError
from embedplat.search import check_query_text

from .search_helpers import hash_collection, word_rows


@pytest.mark.parametrize(
    ("text", "problem"),
    [("   ", "blank"), ("", "blank"), ("a\x00b", "NUL"), ("bad \ud800 text", "U\\+D800")],
)
def test_unusable_query_texts_are_refused(
    platform: Platform, db_url: str, text: str, problem: str
) -> None:
    hash_collection(platform, db_url, word_rows(5, seed=4, metadata=lambda i, rng: {}))
    with pytest.raises(InvalidInputError, match=problem):
        platform.search("docs", text)
    with pytest.raises(InvalidInputError, match=problem):
        platform.search("docs", text, hybrid=True)
    with pytest.raises(InvalidInputError, match=problem):
        platform.search_many("docs", ["apple", text])
    assert platform.search("docs", "apple", k=2)  # a usable query still works


def test_check_query_text_accepts_ordinary_text() -> None:
    assert check_query_text("tomato blight 🍅") == "tomato blight 🍅"
    with pytest.raises(InvalidInputError, match="string"):
        check_query_text(42)
