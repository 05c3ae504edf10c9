"""The metadata filter language, on the Python side: validation only.

One language for SQL, Python and the CLI (``--filter``); ``docs/filters.md`` is the reference.
A filter is a JSON object whose entries must all hold::

    {"topic": "sport"}                       plain value: jsonb containment at that key
    {"author.name": "Ada"}                   dotted keys walk into nested objects / array indexes
    {"year": {"$gte": 2020, "$lt": 2024}}    $eq $ne $gt $gte $lt $lte $in $nin $exists
    {"$or": [{"lang": "en"}, {"lang": "fr"}]}, {"$and": [...]}, {"$not": {...}}

:func:`validate_filter` gives the same verdict as the database, with a message that says where
the problem is, so bad filters fail before any query runs. Filters are evaluated only by the
database: ``embedplat.compile_filter`` (``sql/filters.v2.sql``) is the language's one executable
definition, which the search functions and ``embedplat.metadata_matches`` run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from embedplat.errors import FilterError

__all__ = [
    "COMPARISON_OPERATORS",
    "FIELD_OPERATORS",
    "LOGICAL_OPERATORS",
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_NODES",
    "parse_filter",
    "validate_filter",
]

LOGICAL_OPERATORS = ("$and", "$or", "$not")
COMPARISON_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
FIELD_OPERATORS = ("$eq", "$ne", *COMPARISON_OPERATORS, "$in", "$nin", "$exists")

# The one source of the filter limits: embedplat.filter_check_limits (sql/filters.v3.sql)
# declares the same numbers (tests/integration/test_sql_docs.py checks both sides).
MAX_FILTER_DEPTH = 32
"""Deepest nesting of JSON objects and arrays in a filter, the filter object itself counting 1
(``{"$not": {"a": 1}}`` nests 2, ``{"$or": [{"a": [1]}]}`` 4)."""
MAX_FILTER_NODES = 1000
"""Most nodes in a filter: filter objects (the filter and each one under ``$and``, ``$or``,
``$not``) plus conditions (a plain value at a key, or one operator at a key)."""

_FIELD_LIST = ", ".join(FIELD_OPERATORS[:-1]) + " or $exists"


def parse_filter(text: str) -> dict[str, Any]:
    """A filter from JSON text (what ``--filter`` takes), validated."""
    # Before json.loads, whose recursive decoder raises RecursionError on deep nesting.
    _check_text_depth(text)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise FilterError(f"the filter is not valid JSON: {exc}") from None
    return validate_filter(value)


def validate_filter(filter: Any) -> dict[str, Any]:
    """``filter`` as a plain dict if it follows the filter language; else :class:`FilterError`.

    ``None`` is the empty filter (matches everything).
    """
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise FilterError(
            f'a filter must be a JSON object such as {{"topic": "sport"}}, got {_show(filter)}'
        )
    # Walked without recursion first, so the recursive checks below (and json.dumps) only
    # ever see a bounded depth, and a huge filter is refused before any work on it.
    _check_limits(filter)
    _check(filter, "filter")
    plain: dict[str, Any] = json.loads(_dumps(filter))
    return plain


# -- validation ---------------------------------------------------------------------------------


def _too_deep() -> FilterError:
    return FilterError(
        f"the filter is nested too deeply, limit {MAX_FILTER_DEPTH} levels of objects and arrays"
    )


def _check_text_depth(text: str) -> None:
    """Refuse JSON text nesting deeper than :data:`MAX_FILTER_DEPTH`, by scanning it (strings
    skipped) rather than parsing it."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_FILTER_DEPTH:
                raise _too_deep()
        elif char in "]}":
            depth -= 1


def _check_limits(filter: Mapping[str, Any]) -> None:
    """Refuse a filter deeper than :data:`MAX_FILTER_DEPTH` or with more than
    :data:`MAX_FILTER_NODES` nodes, iteratively (no recursion, so no RecursionError), as
    ``embedplat.filter_check_limits`` does in SQL."""
    # Depth: every container of the document, values included.
    stack: list[tuple[Any, int]] = [(filter, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_FILTER_DEPTH:
            raise _too_deep()
        if isinstance(value, Mapping):
            stack.extend(
                (v, depth + 1) for v in value.values() if isinstance(v, Mapping | list | tuple)
            )
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value if isinstance(v, Mapping | list | tuple))
    # Nodes: filter objects and conditions; pending filter objects count 1 each already, so a
    # $or of 20,000 branches is refused without visiting them.
    nodes = 0
    pending: list[Any] = [filter]
    while pending:
        node = pending.pop()
        nodes += 1
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in ("$and", "$or") and isinstance(value, list | tuple):
                    pending.extend(value)
                elif key == "$not":
                    pending.append(value)
                elif isinstance(key, str) and not key.startswith("$"):
                    nodes += _conditions(value)
        if nodes + len(pending) > MAX_FILTER_NODES:
            raise FilterError(
                f"the filter is too large: more than {MAX_FILTER_NODES} nodes (filter objects "
                "and conditions); use $in for a list of values"
            )


def _conditions(value: Any) -> int:
    """Conditions of one key: one per operator, or one for a plain value."""
    if isinstance(value, Mapping):
        operators = sum(1 for k in value if isinstance(k, str) and k.startswith("$"))
        return operators or 1
    return 1


def _check(filter: Mapping[str, Any], where: str) -> None:
    for key, value in filter.items():
        if not isinstance(key, str):
            raise FilterError(f"{where}: keys must be strings, got {_show(key)}")
        here = f"{where}.{key}" if where else key
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"{here}: needs a non-empty array of filters, got {_show(value)}")
            for n, item in enumerate(value):
                if not isinstance(item, Mapping):
                    raise FilterError(
                        f"{here}[{n}]: a filter must be a JSON object, got {_show(item)}"
                    )
                _check(item, f"{here}[{n}]")
        elif key == "$not":
            if not isinstance(value, Mapping):
                raise FilterError(f"{here}: needs a filter object, got {_show(value)}")
            _check(value, here)
        elif key.startswith("$"):
            raise FilterError(
                f"{where}: unknown logical operator {key!r}; use $and, $or or $not "
                '(field operators go under a key: {"year": {"$gte": 2020}})'
            )
        else:
            _path(key, where)
            _check_value(value, here)
            _check_json(value, here)


def _check_value(value: Any, here: str) -> None:
    if not isinstance(value, Mapping):
        return
    operators = [k for k in value if isinstance(k, str) and k.startswith("$")]
    if not operators:
        return
    if len(operators) != len(value):
        raise FilterError(f"{here}: mixes operators ($...) and plain keys in one object")
    for op, arg in value.items():
        if op not in FIELD_OPERATORS:
            raise FilterError(f"{here}: unknown operator {op!r}; use {_FIELD_LIST}")
        if op in COMPARISON_OPERATORS and not (_is_number(arg) or isinstance(arg, str)):
            raise FilterError(f"{here}: {op} needs a number or a string, got {_show(arg)}")
        if op in ("$in", "$nin") and not isinstance(arg, list):
            raise FilterError(f"{here}: {op} needs an array of values, got {_show(arg)}")
        if op == "$exists" and not isinstance(arg, bool):
            raise FilterError(f"{here}: $exists needs true or false, got {_show(arg)}")


def _check_json(value: Any, here: str) -> None:
    """Values must be JSON: the database only ever sees them as jsonb."""
    try:
        _dumps(value)
    except (TypeError, ValueError) as exc:
        raise FilterError(f"{here}: not a JSON value ({exc})") from None


def _path(key: str, where: str = "filter") -> list[str]:
    parts = key.split(".")
    if "" in parts:
        raise FilterError(
            f'{where}: key {key!r} has an empty path segment; write nested keys as "a.b"'
        )
    return parts


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _show(value: Any) -> str:
    try:
        text = _dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
