"""An oracle for the metadata filter language: docs/filters.md written out in plain Python.

The database's compiler (``embedplat.compile_filter``, sql/filters.v2.sql) is the product's
only executable definition of the language; this is the independent one the tests compare it
with. It is written from the documentation, not from the SQL: jsonb values are modelled as
Python JSON values (``None`` = JSON null, :data:`MISSING` = no value at the path).

String ordering follows Python (code points); the database uses its collation, so tests
compare ordered strings only where both agree (lower-case ASCII letters).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# -- the documented cases ------------------------------------------------------------------------

# One metadata value and what each filter gives on it, as docs/filters.md says; they pin the
# oracle (tests/unit/test_filters.py) and the database (tests/integration/test_filter_compiler.py).
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


DOC_CASES: list[tuple[dict[str, object] | None, bool]] = [
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
]


# -- the oracle ----------------------------------------------------------------------------------

MISSING = object()
"""What a path lookup yields where the metadata has no value (SQL NULL, not JSON null)."""


def matches(metadata: Mapping[str, Any] | None, filter_: Mapping[str, Any] | None) -> bool:
    """Whether ``metadata`` satisfies the (valid) filter ``filter_``."""
    if not filter_:
        return True
    return all(_entry(metadata, key, value) for key, value in filter_.items())


def _entry(metadata: Any, key: str, value: Any) -> bool:
    if key == "$and":
        return all(matches(metadata, f) for f in value)
    if key == "$or":
        return any(matches(metadata, f) for f in value)
    if key == "$not":
        return not matches(metadata, value)
    target = lookup(metadata, key)
    if _is_operators(value):
        return all(_operator(target, op, arg) for op, arg in value.items())
    # A plain value: the value at the key contains it (jsonb @>, nested semantics).
    return target is not MISSING and contains(target, value)


def _is_operators(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(k.startswith("$") for k in value)


def lookup(metadata: Any, key: str) -> Any:
    """The value at a dotted key (``metadata #> path``): object keys, array indexes (negative
    from the end); :data:`MISSING` when there is none."""
    node = MISSING if metadata is None else metadata
    for part in key.split("."):
        if isinstance(node, dict):
            node = node.get(part, MISSING)
        elif isinstance(node, list):
            try:
                index = int(part)
            except ValueError:
                return MISSING
            if index < 0:
                index += len(node)
            node = node[index] if 0 <= index < len(node) else MISSING
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def equal(a: Any, b: Any) -> bool:
    """jsonb equality: same JSON type and value; arrays in order; 1 equals 1.0, true is not 1."""
    if json_type(a) != json_type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return set(a) == set(b) and all(equal(a[k], b[k]) for k in a)
    return bool(a == b)


def contains(a: Any, b: Any) -> bool:
    """Whether ``a`` contains ``b`` as a nested jsonb value: objects contain their keys'
    contained values, arrays contain each listed element, a scalar only an equal scalar (a
    scalar is not contained in an array holding it)."""
    if json_type(a) != json_type(b):
        return False
    if isinstance(b, dict):
        return all(k in a and contains(a[k], v) for k, v in b.items())
    if isinstance(b, list):
        return all(any(contains(x, y) for x in a) for y in b)
    return equal(a, b)


def _operator(target: Any, op: str, arg: Any) -> bool:
    present = target is not MISSING
    if op == "$eq":
        return present and equal(target, arg)
    if op == "$ne":
        return not (present and equal(target, arg))
    if op in ("$gt", "$gte", "$lt", "$lte"):
        # Only values of the argument's JSON type compare; others never match.
        if not present or json_type(target) != json_type(arg):
            return False
        return {
            "$gt": target > arg,
            "$gte": target >= arg,
            "$lt": target < arg,
            "$lte": target <= arg,
        }[op]
    if op in ("$in", "$nin"):
        found = present and (
            any(equal(target, v) for v in arg)
            or (isinstance(target, list) and any(equal(t, v) for t in target for v in arg))
        )
        return found if op == "$in" else not found
    if op == "$exists":
        return present is arg
    raise AssertionError(f"not an operator of the language: {op}")
