"""SQLAlchemy helpers: embedplat's SQL functions as table-valued selectables.

Each helper returns a ``TableValuedAlias`` — a FROM item with typed columns — so an app can
compose the search functions with its own tables in one query::

    from sqlalchemy import select
    from embedplat.orm import search_fn

    hits = search_fn("docs", query_vector, 10, filter={"lang": "en"})
    stmt = (
        select(Article.title, hits.c.similarity, hits.c.chunk)
        .join(Article, Article.slug == hits.c.id)   # hits.c.id is the record's external id
        .order_by(hits.c.similarity.desc())
    )
    rows = session.execute(stmt).all()

``search_fn`` / ``similar_fn`` have the columns of ``embedplat.search_hit`` (``SEARCH_COLUMNS``)
and ``hybrid_search_fn`` those of ``embedplat.hybrid_hit`` (``HYBRID_COLUMNS``); turn rows into
typed results with :meth:`SearchHit.from_row` / :meth:`HybridHit.from_row`. Every argument is a
bound parameter; filters are validated in Python first (:mod:`embedplat.filters`).

Other set-returning functions of schema ``embedplat`` (near-duplicates, anomaly scores, ...)
follow one pattern — declare their columns once and wrap :func:`table_function` (Python floats
are sent as double precision, which ``embedplat.near_duplicates`` takes)::

    from sqlalchemy import Float, Text, select
    from sqlalchemy.sql.selectable import TableValuedAlias

    from embedplat.orm import table_function

    NEAR_DUPLICATE_COLUMNS = (("a", Text()), ("b", Text()), ("similarity", Float()))

    def near_duplicates_fn(collection: str, threshold: float, k: int = 10) -> TableValuedAlias:
        return table_function(
            "near_duplicates", collection, threshold, k,
            columns=NEAR_DUPLICATE_COLUMNS, alias="near_duplicates",
        )

    pairs = near_duplicates_fn("docs", 0.9)
    rows = session.execute(select(pairs.c.a, pairs.c.b, pairs.c.similarity)).all()
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import Boolean, Float, Integer, Text, bindparam, cast, column, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

from embedplat.filters import validate_filter
from embedplat.search import DEFAULT_K, DEFAULT_RRF_K, HybridHit, SearchHit, query_vector_literal

__all__ = [
    "HYBRID_COLUMNS",
    "SEARCH_COLUMNS",
    "HybridHit",
    "SearchHit",
    "hybrid_search_fn",
    "search_fn",
    "similar_fn",
    "table_function",
]

Columns = Sequence[tuple[str, TypeEngine[Any]]]

SEARCH_COLUMNS: Columns = (
    ("id", Text()),
    ("chunk", Text()),
    ("similarity", Float()),
    ("metadata", JSONB()),
    ("chunk_ordinal", Integer()),
    ("char_start", Integer()),
    ("char_end", Integer()),
)

HYBRID_COLUMNS: Columns = (
    ("id", Text()),
    ("chunk", Text()),
    ("score", Float()),
    ("similarity", Float()),
    ("text_score", Float()),
    ("vector_rank", Integer()),
    ("text_rank", Integer()),
    ("metadata", JSONB()),
    ("chunk_ordinal", Integer()),
)


def table_function(
    name: str, *args: Any, columns: Columns, alias: str | None = None
) -> TableValuedAlias:
    """``embedplat.<name>(*args)`` as a FROM item with the given typed columns.

    ``name`` is a function of schema ``embedplat`` (a Python identifier, chosen by the
    programmer, never by users); plain Python values in ``args`` become bound parameters.
    """
    if not name.isidentifier():
        raise ValueError(f"not a function name: {name!r}")
    function: FunctionElement[Any] = getattr(func.embedplat, name)(*args)
    return function.table_valued(*(column(n, t) for n, t in columns)).alias(alias or name)


def search_fn(
    collection: str,
    query: Sequence[float] | np.ndarray,
    k: int = DEFAULT_K,
    *,
    filter: Mapping[str, Any] | None = None,
    min_similarity: float | None = None,
    per_record: bool = True,
    ef_search: int | None = None,
    probes: int | None = None,
    query_model: str | None = None,
    query_fingerprint: str | None = None,
    alias: str = "search_hits",
) -> TableValuedAlias:
    """``embedplat.search(...)`` as a selectable (columns: :data:`SEARCH_COLUMNS`).

    ``query_model`` / ``query_fingerprint``: the model ``query`` was embedded with; the
    database refuses the statement unless it is the collection's active model (see
    :func:`embedplat.search.search_vector`).
    """
    return table_function(
        "search",
        _text(collection),
        _vector(query),
        _int(k),
        _filter(filter),
        bindparam(None, min_similarity, type_=Float()),
        bindparam(None, per_record, type_=Boolean()),
        _int(ef_search),
        _int(probes),
        _text(query_model),
        _text(query_fingerprint),
        columns=SEARCH_COLUMNS,
        alias=alias,
    )


def hybrid_search_fn(
    collection: str,
    query_text: str | None,
    query: Sequence[float] | np.ndarray | None,
    k: int = DEFAULT_K,
    *,
    filter: Mapping[str, Any] | None = None,
    vector_weight: float = 1.0,
    text_weight: float = 1.0,
    rrf_k: int = DEFAULT_RRF_K,
    ef_search: int | None = None,
    probes: int | None = None,
    query_model: str | None = None,
    query_fingerprint: str | None = None,
    alias: str = "hybrid_hits",
) -> TableValuedAlias:
    """``embedplat.hybrid_search(...)`` as a selectable (columns: :data:`HYBRID_COLUMNS`;
    ``query_model`` / ``query_fingerprint`` as in :func:`search_fn`)."""
    return table_function(
        "hybrid_search",
        _text(collection),
        _text(query_text),
        cast(bindparam(None, None, type_=Text()), VECTOR()) if query is None else _vector(query),
        _int(k),
        _filter(filter),
        bindparam(None, vector_weight, type_=Float()),
        bindparam(None, text_weight, type_=Float()),
        _int(rrf_k),
        _int(ef_search),
        _int(probes),
        _text(query_model),
        _text(query_fingerprint),
        columns=HYBRID_COLUMNS,
        alias=alias,
    )


def similar_fn(
    collection: str,
    external_id: str,
    k: int = DEFAULT_K,
    *,
    filter: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    probes: int | None = None,
    alias: str = "similar_hits",
) -> TableValuedAlias:
    """``embedplat.similar(...)`` as a selectable (columns: :data:`SEARCH_COLUMNS`)."""
    return table_function(
        "similar",
        _text(collection),
        _text(external_id),
        _int(k),
        _filter(filter),
        _int(ef_search),
        _int(probes),
        columns=SEARCH_COLUMNS,
        alias=alias,
    )


def _text(value: str | None) -> ColumnElement[Any]:
    return bindparam(None, value, type_=Text())


def _int(value: int | None) -> ColumnElement[Any]:
    return bindparam(None, value, type_=Integer())


def _vector(query: Sequence[float] | np.ndarray) -> ColumnElement[Any]:
    # The same checks as every other query path (zero vectors included), before any query.
    return cast(bindparam(None, query_vector_literal(query), type_=Text()), VECTOR())


def _filter(filter: Mapping[str, Any] | None) -> ColumnElement[Any]:
    # Sent as text and cast: no dependence on the driver's JSON adaptation.
    text = json.dumps(validate_filter(filter), ensure_ascii=False)
    return cast(bindparam(None, text, type_=Text()), JSONB())
