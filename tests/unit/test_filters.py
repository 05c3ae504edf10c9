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
from embedplat.filters import MAX_FILTER_DEPTH, MAX_FILTER_NODES, parse_filter, validate_filter


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


def _nested_not(levels: int) -> dict[str, object]:
    """``levels`` filter objects nested by $not around {"a": 1} (the innermost counting 1)."""
    filter_: dict[str, object] = {"a": 1}
    for _ in range(levels - 1):
        filter_ = {"$not": filter_}
    return filter_


def test_too_deep_nesting_is_refused() -> None:
    validate_filter(_nested_not(MAX_FILTER_DEPTH))  # the limit itself is accepted
    with pytest.raises(FilterError, match=f"nested too deeply, limit {MAX_FILTER_DEPTH}"):
        validate_filter(_nested_not(MAX_FILTER_DEPTH + 1))


@pytest.mark.parametrize("levels", [MAX_FILTER_DEPTH + 1, 5_000, 200_000])
def test_deep_filter_text_is_refused_without_recursion_error(levels: int) -> None:
    """`--filter` of 5,000 nested $not raised RecursionError (json.loads, then validation)."""
    text = '{"$not": ' * levels + "{}" + "}" * levels
    with pytest.raises(FilterError, match=f"nested too deeply, limit {MAX_FILTER_DEPTH}"):
        parse_filter(text)
    value_text = '{"a": ' + "[" * levels + "]" * levels + "}"
    with pytest.raises(FilterError, match="nested too deeply"):
        parse_filter(value_text)


def test_deep_python_filters_are_refused_without_recursion_error() -> None:
    with pytest.raises(FilterError, match="nested too deeply"):
        validate_filter(_nested_not(5_000))
    deep: list[object] = []
    for _ in range(5_000):
        deep = [deep]
    with pytest.raises(FilterError, match="nested too deeply"):
        validate_filter({"a": {"$in": deep}})
    cyclic: dict[str, object] = {}
    cyclic["a"] = cyclic
    with pytest.raises(FilterError, match="nested too deeply"):
        validate_filter(cyclic)


def test_depth_counts_every_object_and_array() -> None:
    """Values count too: an array of arrays in a plain value is as deep as nested filters."""
    value: object = 1
    for _ in range(MAX_FILTER_DEPTH - 1):
        value = [value]
    validate_filter({"a": value})  # 1 (the filter) + 31 arrays
    with pytest.raises(FilterError, match="nested too deeply"):
        validate_filter({"a": [value]})
    # Brackets inside strings are text, not nesting.
    assert parse_filter('{"a": "' + "[{" * 100 + '\\"[{"}') == {"a": "[{" * 100 + '"[{'}


def _or_of(branches: int) -> dict[str, object]:
    """A $or of ``branches`` one-condition filters: 1 + 2 * branches nodes."""
    return {"$or": [{"n": i} for i in range(branches)]}


def test_filter_size_is_capped() -> None:
    """A $or of 20,000 branches took 35 s on 200 records; it is refused before any query."""
    most = (MAX_FILTER_NODES - 1) // 2
    validate_filter(_or_of(most))  # 1 + 2 * 499 = 999 nodes
    for branches in (most + 1, 20_000):
        with pytest.raises(FilterError, match=f"too large: more than {MAX_FILTER_NODES} nodes"):
            validate_filter(_or_of(branches))
    # Conditions count one per operator; a plain value counts one, whatever its size.
    validate_filter({f"k{i}": {"$gte": 0, "$lt": 9} for i in range((MAX_FILTER_NODES - 1) // 2)})
    with pytest.raises(FilterError, match="too large"):
        validate_filter({f"k{i}": {"$gte": 0, "$lt": 9} for i in range(MAX_FILTER_NODES // 2)})
    validate_filter({"id": {"$in": list(range(100_000))}, "blob": {"x": list(range(10_000))}})
    with pytest.raises(FilterError, match="too large"):
        validate_filter({"$and": [{}] * MAX_FILTER_NODES})


def test_parse_filter_from_json_text() -> None:
    assert parse_filter('{"year": {"$gte": 2020}}') == {"year": {"$gte": 2020}}
    with pytest.raises(FilterError, match="not valid JSON"):
        parse_filter("{year: 2020}")
    with pytest.raises(FilterError, match="JSON object"):
        parse_filter("[1, 2]")


def test_validate_returns_plain_json() -> None:
    assert validate_filter({"tags": ("a", "b")}) == {"tags": ["a", "b"]}
