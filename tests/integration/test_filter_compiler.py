"""The filter compiler (embedplat.compile_filter), the language's one executable definition,
against an independent oracle (tests/filter_oracle.py): random filters over a real table whose
metadata holds every kind of JSON value, run the way embedplat.search runs them."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedplat.api import Platform
from embedplat.search import search_vector
from tests.filter_oracle import DOC, DOC_CASES, matches

from .search_helpers import hash_collection

# -- the table -----------------------------------------------------------------------------------

# Every kind of value: numbers (integers, fractions, negative, zero), strings (the empty one
# too), booleans, JSON null, arrays (empty, of scalars, nested, of objects) and objects (empty,
# nested). Strings are lower-case ASCII letters, which the database's collation orders as
# Python does.
SCALARS: list[Any] = [-2, -1.5, 0, 1, 2.5, 3, "", "x", "xy", "y", True, False, None]
COMPOSITES: list[Any] = [
    [],
    [1, 2],
    ["x"],
    ["x", "y"],
    [1, "x", None],
    [[1], 2],
    [{"a": 1}, {"a": "x", "b": True}],
    [True],
    {},
    {"a": 1},
    {"a": "x", "b": [1, 2]},
    {"a": {"b": "x"}, "c": None},
    {"b": None},
    {"c": [{"a": 2}], "a": [3, "y"]},
]
POOL = SCALARS + COMPOSITES
TOP_KEYS = ("a", "b", "c")


def _random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth >= 2 or roll < 0.5:
        return rng.choice(POOL)
    if roll < 0.75:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {k: _random_value(rng, depth + 1) for k in rng.sample(TOP_KEYS, rng.randint(0, 3))}


def _table() -> list[dict[str, Any]]:
    """Metadata of the table's records: each kind of value at each top-level key, a record
    with no keys at all, then random ones (a key is missing in about a quarter of them)."""
    rows: list[dict[str, Any]] = [{}]
    for i, value in enumerate(POOL):
        rows.append({TOP_KEYS[i % 3]: value, TOP_KEYS[(i + 1) % 3]: POOL[(i * 7) % len(POOL)]})
    rng = random.Random(20261201)
    for _ in range(40):
        rows.append({k: _random_value(rng, 0) for k in TOP_KEYS if rng.random() > 0.25})
    return rows


METADATA = _table()
QUERY = np.ones(64, dtype=np.float32)


@pytest.fixture
def table(platform: Platform, db_url: str) -> dict[str, dict[str, Any]]:
    """Collection ``docs``, one embedded record per entry of :data:`METADATA`."""
    rows = [
        {"id": f"m{i:03d}", "text": f"apple banana record {i}", "metadata": m}
        for i, m in enumerate(METADATA)
    ]
    hash_collection(platform, db_url, rows)
    return {str(r["id"]): r["metadata"] for r in rows}


# -- random filters ------------------------------------------------------------------------------

# Plain keys, dotted paths into objects and arrays (negative indexes too), and a key no record
# has.
_keys = st.sampled_from(
    ["a", "b", "c", "d", "a.a", "a.b", "b.a.b", "c.b", "a.0", "b.1", "c.-1", "a.c.0.a", "b.0.a"]
)
_values = st.recursive(
    st.sampled_from(POOL),
    lambda inner: st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(st.sampled_from(TOP_KEYS), inner, max_size=2),
    ),
    max_leaves=3,
)
_ordered = st.sampled_from([-2, -1.5, 0, 1, 2.5, "", "x", "xy", "y"])
_operator = st.one_of(
    st.tuples(st.sampled_from(["$eq", "$ne"]), _values),
    st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), _ordered),
    st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(_values, max_size=3)),
    st.tuples(st.just("$exists"), st.booleans()),
)
_clause = st.one_of(
    st.dictionaries(_keys, _values, min_size=1, max_size=2),  # plain values (containment)
    st.builds(lambda k, ops: {k: dict(ops)}, _keys, st.lists(_operator, min_size=1, max_size=3)),
)
_filters = st.recursive(
    _clause,
    lambda inner: st.one_of(
        st.builds(lambda fs: {"$and": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda fs: {"$or": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda f: {"$not": f}, inner),
        st.builds(lambda a, b: {**a, **b}, inner, inner),
    ),
    max_leaves=5,
)


def _sql_matches(conn: psycopg.Connection[Any], filter_: dict[str, Any]) -> tuple[set[str], bool]:
    """The records metadata_matches selects, and whether the compiler took the containment
    fast path (then ``metadata @> filter`` selects the same records)."""
    text = json.dumps(filter_)
    ids = {
        r[0]
        for r in conn.execute(
            "SELECT external_id FROM embedplat.records "
            "WHERE embedplat.metadata_matches(metadata, %s::jsonb)",
            (text,),
        ).fetchall()
    }
    row = conn.execute(
        "SELECT is_containment FROM embedplat.compile_filter(%s::jsonb)", (text,)
    ).fetchone()
    assert row is not None
    if row[0]:
        contained = conn.execute(
            "SELECT external_id FROM embedplat.records WHERE metadata @> %s::jsonb", (text,)
        ).fetchall()
        assert {r[0] for r in contained} == ids, filter_
    return ids, bool(row[0])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(filter_=_filters)
def test_compiled_filters_select_what_the_oracle_selects(
    platform: Platform, table: dict[str, dict[str, Any]], filter_: dict[str, Any]
) -> None:
    want = {rid for rid, m in table.items() if matches(m, filter_)}
    with platform.connection() as conn:
        # embedplat.search: k above the table's size, so every matching record comes back.
        hits = search_vector(conn, "docs", QUERY, k=1000, filter=filter_)
        assert {h.id for h in hits} == want, filter_
        assert len(hits) == len(want)
        ids, _ = _sql_matches(conn, filter_)
        assert ids == want, filter_


def test_the_table_holds_every_kind_of_value(table: dict[str, dict[str, Any]]) -> None:
    """The differential test is only as good as the data: each kind is really stored."""
    kinds: set[str] = set()

    def walk(value: Any) -> None:
        kinds.add(type(value).__name__)
        if isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    for metadata in table.values():
        walk(metadata)
    assert kinds >= {"int", "float", "str", "bool", "NoneType", "list", "dict"}
    assert any(not m for m in table.values())  # a record with no keys
    for key in TOP_KEYS:
        assert any(key not in m for m in table.values())  # missing keys
        assert any(isinstance(m.get(key), dict) for m in table.values())  # nested objects
        assert any(isinstance(m.get(key), list) for m in table.values())


# -- the documented cases, through the database ----------------------------------------------------


def test_documented_cases_through_search_and_metadata_matches(
    platform: Platform, db_url: str
) -> None:
    """Every documented case (tests/filter_oracle.py: DOC_CASES), run by the database: the
    record with that metadata is found exactly when the case says."""
    hash_collection(
        platform,
        db_url,
        [
            {"id": "doc", "text": "apple banana", "metadata": DOC},
            {"id": "empty", "text": "apple cherry", "metadata": {}},
        ],
    )
    with platform.connection() as conn:
        for filter_, expected in DOC_CASES:
            hits = {h.id for h in search_vector(conn, "docs", QUERY, k=10, filter=filter_)}
            assert ("doc" in hits) is expected, filter_
            assert ("empty" in hits) is matches({}, filter_), filter_
            row = conn.execute(
                "SELECT embedplat.metadata_matches(%s::jsonb, %s::jsonb)",
                (json.dumps(DOC), json.dumps(filter_ or {})),
            ).fetchone()
            assert row == (expected,), filter_
