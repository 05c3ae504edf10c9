"""The metadata filter language, on the Python side.

One language for SQL (``embedplat.metadata_matches``), Python and the CLI (``--filter``);
``docs/filters.md`` is the reference. A filter is a JSON object whose entries must all hold::

    {"topic": "sport"}                       plain value: jsonb containment at that key
    {"author.name": "Ada"}                   dotted keys walk into nested objects / array indexes
    {"year": {"$gte": 2020, "$lt": 2024}}    $eq $ne $gt $gte $lt $lte $in $nin $exists
    {"$or": [{"lang": "en"}, {"lang": "fr"}]}, {"$and": [...]}, {"$not": {...}}

:func:`validate_filter` gives the same verdict as the database, with a message that says where
the problem is, so bad filters fail before any query runs. :func:`matches` evaluates a filter
in Python with the database's semantics (except string ordering: Python compares code points,
the database its collation); tests check both agree.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from embedplat.errors import FilterError

__all__ = [
    "COMPARISON_OPERATORS",
    "FIELD_OPERATORS",
    "LOGICAL_OPERATORS",
    "matches",
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


def matches(metadata: Mapping[str, Any] | None, filter: Mapping[str, Any] | None) -> bool:
    """Whether ``metadata`` satisfies ``filter`` (validated first)."""
    checked = validate_filter(filter)
    return _matches(metadata, checked)


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


# -- evaluation (mirrors sql/filters.v1.sql) ---------------------------------------------------

_MISSING = object()
# What PostgreSQL's #> accepts as an array index (strtol: blanks, a sign, digits).
_ARRAY_INDEX = re.compile(r"\A[ \t\n\r\f\v]*[+-]?[0-9]+\Z")


def _matches(metadata: Any, filter: Mapping[str, Any]) -> bool:
    result = True
    for key, value in filter.items():
        if key == "$and":
            result = all([_matches(metadata, item) for item in value]) and result
        elif key == "$or":
            result = any([_matches(metadata, item) for item in value]) and result
        elif key == "$not":
            result = (not _matches(metadata, value)) and result
        else:
            target = _lookup(metadata, _path(key))
            if isinstance(value, Mapping) and value and all(k.startswith("$") for k in value):
                for op, arg in value.items():
                    result = _apply(target, op, arg) and result
            else:
                result = (target is not _MISSING and _contains(target, value)) and result
    return result


def _lookup(metadata: Any, path: list[str]) -> Any:
    """``metadata #> path``: object keys, or integer indexes into arrays (negative from the end)."""
    node = metadata
    if node is None:
        return _MISSING
    for part in path:
        if isinstance(node, Mapping):
            if part not in node:
                return _MISSING
            node = node[part]
        elif isinstance(node, list):
            if not _ARRAY_INDEX.match(part):
                return _MISSING
            index = int(part)
            if not -len(node) <= index < len(node):
                return _MISSING
            node = node[index]
        else:
            return _MISSING
    return node


def _apply(target: Any, op: str, arg: Any) -> bool:
    present = target is not _MISSING
    if op == "$eq":
        return present and _equal(target, arg)
    if op == "$ne":
        return not (present and _equal(target, arg))
    if op in COMPARISON_OPERATORS:
        if not present or _json_type(target) != _json_type(arg):
            return False
        if op == "$gt":
            return bool(target > arg)
        if op == "$gte":
            return bool(target >= arg)
        if op == "$lt":
            return bool(target < arg)
        return bool(target <= arg)
    if op in ("$in", "$nin"):
        found = present and (
            any(_equal(target, x) for x in arg)
            or (isinstance(target, list) and any(_equal(t, x) for t in target for x in arg))
        )
        return found if op == "$in" else not found
    if op == "$exists":
        return present is bool(arg)
    raise FilterError(f"unknown operator {op!r}")  # unreachable after validation


def _json_type(value: Any) -> str:
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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _equal(a: Any, b: Any) -> bool:
    """jsonb equality: same JSON type and value (1 == 1.0, but true != 1)."""
    kind = _json_type(a)
    if kind != _json_type(b):
        return False
    if kind == "array":
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "object":
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _contains(a: Any, b: Any) -> bool:
    """jsonb ``@>`` between nested values: a scalar matches only an equal scalar."""
    kind = _json_type(b)
    if kind != _json_type(a):
        return False
    if kind == "object":
        return all(k in a and _contains(a[k], v) for k, v in b.items())
    if kind == "array":
        for item in b:
            if _json_type(item) in ("array", "object"):
                if not any(_contains(x, item) for x in a):
                    return False
            elif not any(_equal(x, item) for x in a):
                return False
        return True
    return _equal(a, b)
