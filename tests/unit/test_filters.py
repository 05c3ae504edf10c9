"""The filter language in Python: validation messages (embedplat.filters), and the test
oracle (tests/filter_oracle.py) pinned to docs/filters.md on every operator.

The same cases run through the database's compiler, the product's one evaluator, in
tests/integration/test_filter_compiler.py, which also compares it with the oracle on random
filters.
"""

from __future__ import annotations

import pytest
from tests.filter_oracle import DOC, DOC_CASES, matches

from embedplat.errors import FilterError, InvalidInputError
from embedplat.filters import parse_filter, validate_filter


@pytest.mark.parametrize(("filter_", "expected"), DOC_CASES)
def test_the_oracle_follows_the_documentation(filter_, expected: bool) -> None:
    assert matches(DOC, filter_) is expected


def test_the_oracle_without_metadata_matches_only_negative_clauses() -> None:
    assert matches(None, {}) is True
    assert matches({}, {"a": {"$exists": False}}) is True
    assert matches({}, {"a": 1}) is False


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ([1], "must be a JSON object"),
        ("topic", "must be a JSON object"),
        ({"$xor": []}, "unknown logical operator '$xor'"),
        ({"$and": []}, "filter.$and: needs a non-empty array"),
        ({"$or": {"a": 1}}, "filter.$or: needs a non-empty array"),
        ({"$or": [{"a": 1}, 2]}, r"filter.$or[1]: a filter must be a JSON object"),
        ({"$not": [1]}, "filter.$not: needs a filter object"),
        ({"year": {"$gte": True}}, "filter.year: $gte needs a number or a string"),
        ({"year": {"$gt": None}}, "$gt needs a number or a string"),
        ({"year": {"$lt": [1]}}, "$lt needs a number or a string"),
        ({"year": {"$in": 3}}, "$in needs an array"),
        ({"year": {"$nin": "abc"}}, "$nin needs an array"),
        ({"year": {"$exists": 1}}, "$exists needs true or false"),
        ({"year": {"$regex": "x"}}, "unknown operator '$regex'"),
        ({"year": {"$gt": 1, "month": 2}}, "mixes operators"),
        ({"a..b": 1}, "empty path segment"),
        ({".a": 1}, "empty path segment"),
        ({"": 1}, "empty path segment"),
        ({"$or": [{"$and": [{"x": {"$in": 1}}]}]}, r"filter.$or[0].$and[0].x: $in needs an array"),
        ({"a": float("nan")}, "not a JSON value"),
        ({"a": {1, 2}}, "not a JSON value"),
    ],
)
def test_invalid_filters_say_what_and_where(filter_, message: str) -> None:
    with pytest.raises(FilterError) as info:
        validate_filter(filter_)
    assert message in str(info.value)
    assert isinstance(info.value, InvalidInputError)  # the CLI prints it as one error line


def test_too_deep_nesting_is_refused() -> None:
    filter_: dict[str, object] = {"a": 1}
    for _ in range(40):
        filter_ = {"$not": filter_}
    with pytest.raises(FilterError, match="deeper than"):
        validate_filter(filter_)


def test_parse_filter_from_json_text() -> None:
    assert parse_filter('{"year": {"$gte": 2020}}') == {"year": {"$gte": 2020}}
    with pytest.raises(FilterError, match="not valid JSON"):
        parse_filter("{year: 2020}")
    with pytest.raises(FilterError, match="JSON object"):
        parse_filter("[1, 2]")


def test_validate_returns_plain_json() -> None:
    assert validate_filter({"tags": ("a", "b")}) == {"tags": ["a", "b"]}
