"""Search options (one frozen dataclass, one source per default and limit), the one SQLSTATE
mapping, and the JSON vocabulary shared with SQL."""

from __future__ import annotations

import dataclasses
import inspect
from types import SimpleNamespace
from typing import Any

import pytest

from embedplat import analytics, search
from embedplat.analytics import DuplicateGroupMember
from embedplat.api import Platform
from embedplat.errors import (
    SQLSTATE_ERRORS,
    CollectionNotFoundError,
    FilterError,
    InvalidInputError,
    ModelMismatchError,
    RecordNotFoundError,
    from_server_error,
    server_message,
)
from embedplat.search import HybridHit, SearchHit, SearchKwargs, SearchOptions


def test_defaults_come_from_the_constants() -> None:
    options = SearchOptions()
    assert options.k == search.DEFAULT_K == 10
    assert options.rrf_k == search.DEFAULT_RRF_K == 60
    for method in (Platform.search, Platform.search_many, Platform.hybrid_search, Platform.similar):
        assert inspect.signature(method).parameters["k"].default == search.DEFAULT_K
    assert analytics.MAX_ANALYTICS_K == 1000 and search.MAX_K == 10_000


def test_options_are_frozen_and_every_keyword_is_a_field() -> None:
    options = SearchOptions(k=5, filter={"a": 1}, hybrid=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.k = 6  # type: ignore[misc]
    fields = {f.name for f in dataclasses.fields(SearchOptions)}
    assert set(SearchKwargs.__annotations__) | {"k", "filter"} == fields
    assert SearchOptions.of(options, k=7) == SearchOptions(k=7, filter={"a": 1}, hybrid=True)
    assert SearchOptions.of(None) == SearchOptions()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"k": 0}, f"between 1 and {search.MAX_K}"),
        ({"k": search.MAX_K + 1}, f"between 1 and {search.MAX_K}"),
        ({"k": True}, "k must be an integer"),
        ({"ef_search": search.MAX_EF_SEARCH + 1}, "ef_search must be between"),
        ({"probes": 0}, "probes must be between"),
        ({"min_similarity": 1.5}, "min_similarity"),
        ({"vector_weight": -1.0}, "vector_weight"),
        ({"vector_weight": 0.0, "text_weight": 0.0}, "cannot both be 0"),
        ({"rrf_k": -1}, "rrf_k must be at least 0"),
        ({"filter": {"a": {"$gte": []}}}, "$gte needs a number"),
    ],
)
def test_bad_options_are_refused_when_built(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        SearchOptions(**fields)
    assert message in str(info.value)


def test_limits_themselves_are_accepted() -> None:
    SearchOptions(k=1)
    SearchOptions(k=search.MAX_K, ef_search=search.MAX_EF_SEARCH, probes=search.MAX_PROBES)


def test_the_filter_is_normalised_once() -> None:
    assert SearchOptions(filter={"tags": ("a", "b")}).filter == {"tags": ["a", "b"]}
    assert SearchOptions(filter={}).filter_json() == "{}"
    assert SearchOptions().filter_json() == "{}"


def _server_error(sqlstate: str, message: str) -> Exception:
    error = Exception(f"ERROR: {message}")
    error.sqlstate = sqlstate  # type: ignore[attr-defined]
    error.diag = SimpleNamespace(message_primary=message)  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("sqlstate", "message", "kind"),
    [
        ("42704", "embedplat.search: no collection named 'x'", CollectionNotFoundError),
        (
            "P0002",
            "embedplat.similar: collection 'x' has no record with id 'y'",
            RecordNotFoundError,
        ),
        ("22023", "embedplat.search: k must be between 1 and 10000, got 0", InvalidInputError),
        ("22023", "embedplat filter: unknown operator", FilterError),
        ("22004", "embedplat.search: the query vector is NULL", InvalidInputError),
        ("55000", "reference collection 'r' has no embeddings yet", InvalidInputError),
        ("22000", "the query vector has 3 dimensions", ModelMismatchError),
    ],
)
def test_one_sqlstate_mapping(sqlstate: str, message: str, kind: type[Exception]) -> None:
    error = from_server_error(_server_error(sqlstate, message))
    assert type(error) is kind and str(error) == message
    assert SQLSTATE_ERRORS[sqlstate] in (kind, InvalidInputError)


def test_other_server_errors_are_not_mapped() -> None:
    assert from_server_error(_server_error("40P01", "deadlock detected")) is None
    assert from_server_error(ValueError("no sqlstate")) is None
    assert server_message(ValueError("plain")) == "plain"


def test_json_carries_the_sql_names_and_the_old_keys() -> None:
    hit = SearchHit(id="a", score=0.9, chunk="text", metadata={})
    assert hit.to_json()["similarity"] == hit.to_json()["score"] == 0.9
    hybrid = HybridHit(id="a", score=0.03, chunk="t", metadata={}, similarity=0.8)
    # As in SQL's hybrid_hit: score is the fused score, similarity the cosine one.
    assert hybrid.to_json()["score"] == 0.03 and hybrid.to_json()["similarity"] == 0.8
    member = DuplicateGroupMember(group=2, id="x", keeper=True).to_json()
    assert member == {"group_id": 2, "group": 2, "id": "x", "keeper": True}
