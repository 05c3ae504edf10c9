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
    "parse_filter",
    "validate_filter",
]

LOGICAL_OPERATORS = ("$and", "$or", "$not")
COMPARISON_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
FIELD_OPERATORS = ("$eq", "$ne", *COMPARISON_OPERATORS, "$in", "$nin", "$exists")
MAX_DEPTH = 32

_FIELD_LIST = ", ".join(FIELD_OPERATORS[:-1]) + " or $exists"


def parse_filter(text: str) -> dict[str, Any]:
    """A filter from JSON text (what ``--filter`` takes), validated."""
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
    _check(filter, "filter", 0)
    plain: dict[str, Any] = json.loads(_dumps(filter))
    return plain


# -- validation ---------------------------------------------------------------------------------


def _check(filter: Mapping[str, Any], where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FilterError(f"{where}: the filter nests deeper than {MAX_DEPTH} levels")
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
                _check(item, f"{here}[{n}]", depth + 1)
        elif key == "$not":
            if not isinstance(value, Mapping):
                raise FilterError(f"{here}: needs a filter object, got {_show(value)}")
            _check(value, here, depth + 1)
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
