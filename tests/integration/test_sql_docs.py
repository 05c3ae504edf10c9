"""The SQL API contract: docs/sql.md against the database's catalogue (every function of schema
embedplat documented, public ones with the same argument names, types and defaults, internal
ones listed as internal), the Python constants against the SQL defaults and limits, and the
ORM pattern of embedplat.orm's docstring run exactly as written."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from embedplat import analytics, search
from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.db.vectors import vector_literal

from .search_helpers import hash_collection

SQL_DOC = (Path(__file__).resolve().parents[2] / "docs" / "sql.md").read_text(encoding="utf-8")
INTERNAL_HEADING = "## Internal functions"

# Spellings of one type in docs and in pg_get_function_arguments.
_TYPE_NAMES = {"float8": "double precision", "int": "integer", "bool": "boolean"}


def _split_args(text: str) -> list[str]:
    """Split an argument list on its top-level commas (defaults hold no commas here)."""
    return [a.strip() for a in text.split(",") if a.strip()]


def _norm_default(value: str | None) -> str | None:
    """A default without its casts: '{}'::jsonb -> '{}', NULL::integer -> NULL."""
    if value is None:
        return None
    return re.sub(r"::[a-z ]+(\[\])?", "", value.strip()).lower()


def _norm_type(value: str) -> str:
    value = value.strip().lower()
    return _TYPE_NAMES.get(value, value)


def _parse_arg(text: str) -> tuple[str, str, str | None]:
    """``name type [DEFAULT value]`` -> (name, type, default)."""
    parts = re.split(r"\s+DEFAULT\s+", text.strip(), maxsplit=1, flags=re.I)
    name, _, type_ = parts[0].partition(" ")
    return name, _norm_type(type_), _norm_default(parts[1]) if len(parts) > 1 else None


def _documented_signatures() -> dict[str, list[tuple[str, str, str | None]]]:
    """The public functions' signatures: ``embedplat.NAME(args) RETURNS`` in sql blocks above
    the internal section."""
    public = SQL_DOC.split(INTERNAL_HEADING)[0]
    found: dict[str, list[tuple[str, str, str | None]]] = {}
    for block in re.findall(r"```sql\n(.*?)```", public, flags=re.S):
        for name, args in re.findall(r"embedplat\.(\w+)\(([^()]*)\)\s*RETURNS", block):
            assert name not in found, f"docs/sql.md gives two signatures for {name}"
            found[name] = [_parse_arg(a) for a in _split_args(args)]
    return found


def _documented_internals() -> dict[str, list[str]]:
    """The internal functions listed in the internal section: name -> argument names."""
    section = SQL_DOC.split(INTERNAL_HEADING)[1].split("\n## ")[0]
    return {
        name: [a.strip() for a in args.split(",") if a.strip()]
        for name, args in re.findall(r"^\| `(\w+)\(([^)]*)\)`", section, flags=re.M)
    }


def _catalogue(url: str) -> dict[str, list[tuple[str, str, str | None]]]:
    """Every function of schema embedplat: name -> its input arguments (name, type, default)."""
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT p.proname, pg_get_function_arguments(p.oid) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'embedplat'"
        ).fetchall()
    functions: dict[str, list[tuple[str, str, str | None]]] = {}
    for name, args in rows:
        assert name not in functions, f"embedplat.{name} is overloaded; document each form"
        functions[name] = [
            _parse_arg(a.removeprefix("INOUT "))
            for a in _split_args(args)
            if not a.startswith("OUT ")
        ]
    return functions


def test_every_function_is_documented_with_its_arguments(db_url: str) -> None:
    catalogue = _catalogue(db_url)
    public = _documented_signatures()
    internal = _documented_internals()
    assert public and internal
    assert not set(public) & set(internal), "documented both as public and as internal"
    # Nothing documented that does not exist (the former `filter_predicate`) ...
    assert set(public) <= set(catalogue), set(public) - set(catalogue)
    assert set(internal) <= set(catalogue), set(internal) - set(catalogue)
    # ... and nothing in the schema undocumented.
    assert set(catalogue) == set(public) | set(internal), (
        set(catalogue) - set(public) - set(internal)
    )
    for name, args in public.items():
        assert args == catalogue[name], f"embedplat.{name}: docs {args} != database"
    for name, arg_names in internal.items():
        assert arg_names == [a[0] for a in catalogue[name]], f"internal {name}"


def test_the_contract_test_would_notice_a_wrong_signature() -> None:
    """The parser reads what the page says (a check on the check)."""
    assert _parse_arg("threshold  float8  DEFAULT 0.7") == ("threshold", "double precision", "0.7")
    assert _parse_arg("filter jsonb DEFAULT '{}'::jsonb") == ("filter", "jsonb", "'{}'")
    near = _documented_signatures()["near_duplicates"]
    assert near == [
        ("collection", "text", None),
        ("threshold", "double precision", "0.7"),
        ("k", "integer", "10"),
    ]
    assert len(_documented_internals()["nearest_chunks"]) == 7


# -- one source per default and limit -----------------------------------------------------------


def _defaults(url: str, function: str) -> dict[str, str | None]:
    return {name: default for name, _, default in _catalogue(url)[function]}


def test_sql_defaults_are_the_python_constants(db_url: str) -> None:
    for function in ("search", "hybrid_search", "similar"):
        assert _defaults(db_url, function)["k"] == str(search.DEFAULT_K), function
    assert _defaults(db_url, "hybrid_search")["rrf_k"] == str(search.DEFAULT_RRF_K)
    for function in ("near_duplicates", "near_duplicate_record_pairs", "duplicate_groups"):
        defaults = _defaults(db_url, function)
        assert float(defaults["threshold"] or "nan") == analytics.DEFAULT_DUPLICATE_THRESHOLD
        assert defaults["k"] == str(analytics.DEFAULT_DUPLICATE_K), function
    assert _defaults(db_url, "anomaly_scores")["k"] == str(analytics.DEFAULT_ANOMALY_K)
    # The Python side declares the same defaults.
    assert search.SearchOptions().k == search.DEFAULT_K
    assert search.SearchOptions().rrf_k == search.DEFAULT_RRF_K


def test_sql_limits_are_the_python_constants(db_url: str) -> None:
    vector = vector_literal(np.ones(8, dtype=np.float32))
    calls: list[tuple[str, tuple[Any, ...], int]] = [
        ("SELECT * FROM embedplat.search('c', %s::vector, %s)", (vector,), search.MAX_K),
        (
            "SELECT * FROM embedplat.hybrid_search('c', 'x', %s::vector, %s)",
            (vector,),
            search.MAX_K,
        ),
        ("SELECT * FROM embedplat.near_duplicates('c', 0.7, %s)", (), analytics.MAX_ANALYTICS_K),
        ("SELECT * FROM embedplat.duplicate_groups('c', 0.7, %s)", (), analytics.MAX_ANALYTICS_K),
        ("SELECT * FROM embedplat.anomaly_scores('c', %s)", (), analytics.MAX_ANALYTICS_K),
    ]
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        # A collection with nothing embedded: every call stops right after its checks.
        conn.execute(
            "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap) "
            "VALUES ('c', 'test-hash-8', 100, 0)"
        )
        for statement, args, limit in calls:
            conn.execute(statement, (*args, limit)).fetchall()  # the limit itself is accepted
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=f"and {limit}, got"):
                conn.execute(statement, (*args, limit + 1))
        # similar checks k before looking the record up.
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=f"and {search.MAX_K},"):
            conn.execute("SELECT * FROM embedplat.similar('c', 'r', %s)", (search.MAX_K + 1,))
        with pytest.raises(psycopg.errors.NoDataFound):
            conn.execute("SELECT * FROM embedplat.similar('c', 'r', %s)", (search.MAX_K,))
    # Python refuses the same values before any query.
    from embedplat.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=str(search.MAX_K)):
        search.SearchOptions(k=search.MAX_K + 1)
    search.SearchOptions(k=search.MAX_K)


def test_sql_filter_limits_are_the_python_constants(db_url: str) -> None:
    """embedplat.filter_check_limits and embedplat.filters agree on both limits, at the limit
    and one past it."""
    import json

    from embedplat import filters
    from embedplat.errors import FilterError

    def nested(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels - 1):
            value = {"$not": value}
        return value

    def and_of(nodes: int) -> dict[str, Any]:
        return {"$and": [{}] * (nodes - 1)}  # the $and's object + one empty filter per branch

    cases = [
        (nested(filters.MAX_FILTER_DEPTH), nested(filters.MAX_FILTER_DEPTH + 1), "nested"),
        (and_of(filters.MAX_FILTER_NODES), and_of(filters.MAX_FILTER_NODES + 1), "too large"),
    ]
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        for at_limit, past_limit, message in cases:
            conn.execute("SELECT embedplat.filter_check_limits(%s::jsonb)", (json.dumps(at_limit),))
            filters.validate_filter(at_limit)
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
                conn.execute(
                    "SELECT embedplat.filter_check_limits(%s::jsonb)", (json.dumps(past_limit),)
                )
            with pytest.raises(FilterError, match=message):
                filters.validate_filter(past_limit)


# -- the ORM pattern, as documented -----------------------------------------------------------------


def _docstring_pattern() -> str:
    """The code block after "follow one pattern" in embedplat.orm's docstring."""
    import embedplat.orm

    doc = embedplat.orm.__doc__ or ""
    after = doc.split("follow one pattern", 1)[1].split("::\n", 1)[1]
    lines = []
    for line in after.splitlines():
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_orm_near_duplicates_pattern_runs_as_documented(platform: Platform, db_url: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from embedplat.db.connection import sqlalchemy_url

    hash_collection(
        platform,
        db_url,
        [
            {"id": "a", "text": "apple banana cherry"},
            {"id": "b", "text": "apple banana cherry"},  # identical content: similarity 1
            {"id": "c", "text": "granite harbor island"},
        ],
    )
    code = _docstring_pattern()
    assert "near_duplicates_fn" in code and "session.execute" in code
    engine = create_engine(sqlalchemy_url(db_url))
    try:
        with Session(engine) as session:
            namespace: dict[str, Any] = {"session": session}
            exec(compile(code, "embedplat.orm docstring", "exec"), namespace)
    finally:
        engine.dispose()
    assert [tuple(r) for r in namespace["rows"]] == [("a", "b", 1.0)]
