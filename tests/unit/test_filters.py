"""The filter language in Python: validation messages and evaluation of every operator.

The database's evaluator (embedplat.metadata_matches) is checked against this one in
tests/integration/test_search_v2.py.
"""

from __future__ import annotations

import pytest

from embedplat.errors import FilterError, InvalidInputError
from embedplat.filters import matches, parse_filter, validate_filter

DOC = {
    "topic": "sport",
    "year": 2021,
    "score": 4.5,
    "draft": False,
    "note": None,
    "tags": ["a", "b"],
    "author": {"name": "Ada", "age": 36, "langs": ["en", "fr"]},
    "refs": [{"id": 1}, {"id": 2}],
    "we'ird; key%": "ok",
    "ключ": "значение",
}


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({}, True),
        (None, True),
        # plain values: containment at the key
        ({"topic": "sport"}, True),
        ({"topic": "chess"}, False),
        ({"year": 2021.0}, True),  # numbers compare numerically
        ({"draft": 0}, False),  # but false is not 0
        ({"note": None}, True),
        ({"missing": None}, False),
        ({"tags": ["b"]}, True),
        ({"tags": ["b", "z"]}, False),
        ({"tags": "a"}, False),  # a scalar does not match an array holding it (jsonb @>)
        ({"author": {"name": "Ada"}}, True),
        ({"refs": [{"id": 2}]}, True),
        # dotted paths
        ({"author.name": "Ada"}, True),
        ({"author.langs": ["fr"]}, True),
        ({"author.name.first": "Ada"}, False),
        ({"refs.1.id": 2}, True),
        ({"refs.-1.id": 2}, True),
        ({"refs.5.id": 2}, False),
        # $eq / $ne
        ({"topic": {"$eq": "sport"}}, True),
        ({"tags": {"$eq": ["a", "b"]}}, True),
        ({"tags": {"$eq": ["b", "a"]}}, False),
        ({"topic": {"$ne": "sport"}}, False),
        ({"missing": {"$ne": 1}}, True),
        # comparisons
        ({"year": {"$gt": 2020}}, True),
        ({"year": {"$gt": 2021}}, False),
        ({"year": {"$gte": 2021}}, True),
        ({"year": {"$lt": 2021}}, False),
        ({"year": {"$lte": 2021, "$gte": 2021}}, True),
        ({"score": {"$gt": 4, "$lt": 5}}, True),
        ({"year": {"$gt": "2000"}}, False),  # another JSON type never matches
        ({"topic": {"$gte": "s", "$lt": "t"}}, True),
        ({"missing": {"$lt": 1}}, False),
        # $in / $nin
        ({"topic": {"$in": ["chess", "sport"]}}, True),
        ({"topic": {"$in": ["chess"]}}, False),
        ({"tags": {"$in": ["z", "b"]}}, True),  # an array value sharing an element
        ({"tags": {"$in": ["z"]}}, False),
        ({"topic": {"$nin": ["chess"]}}, True),
        ({"topic": {"$nin": ["sport"]}}, False),
        ({"missing": {"$nin": ["x"]}}, True),
        ({"missing": {"$in": ["x"]}}, False),
        # $exists
        ({"note": {"$exists": True}}, True),  # JSON null is present
        ({"missing": {"$exists": True}}, False),
        ({"missing": {"$exists": False}}, True),
        ({"author.age": {"$exists": True}}, True),
        # logic
        ({"$and": [{"topic": "sport"}, {"year": 2021}]}, True),
        ({"$and": [{"topic": "sport"}, {"year": 1999}]}, False),
        ({"$or": [{"topic": "chess"}, {"year": 2021}]}, True),
        ({"$or": [{"topic": "chess"}, {"year": 1999}]}, False),
        ({"$not": {"topic": "chess"}}, True),
        ({"$not": {"topic": "sport"}}, False),
        ({"topic": "sport", "$or": [{"draft": True}, {"score": {"$gte": 4}}]}, True),
        ({"$or": [{"$and": [{"topic": "sport"}, {"$not": {"tags": ["a"]}}]}, {"year": 1}]}, False),
        # keys are data, whatever they contain
        ({"we'ird; key%": "ok"}, True),
        ({"ключ": {"$in": ["значение"]}}, True),
    ],
)
def test_every_operator(filter_, expected: bool) -> None:
    assert matches(DOC, filter_) is expected


def test_no_metadata_matches_only_negative_clauses() -> None:
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
