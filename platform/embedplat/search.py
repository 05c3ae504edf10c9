"""Python side of ``embedplat.search``, ``embedplat.hybrid_search`` and ``embedplat.similar``.

Typed hits, query vectors bound to the collection's model (the database refuses a vector of
another model, named by ``query_model`` / ``query_fingerprint``), the search options in one
frozen dataclass (:class:`SearchOptions`, checked when built; filters validated by
:mod:`embedplat.filters`), the defaults and limits the SQL functions share (:data:`DEFAULT_K`,
:data:`MAX_K`, :data:`DEFAULT_RRF_K`, :data:`MAX_EF_SEARCH`, :data:`MAX_PROBES`), and server
errors turned into embedplat errors (:func:`embedplat.errors.server_errors`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import numpy as np
import psycopg

from embedplat.db.vectors import vector_literal
from embedplat.errors import InvalidInputError, server_errors
from embedplat.filters import validate_filter

Connection = psycopg.Connection[Any]
Filter = Mapping[str, Any] | None

# The one source of each default and limit of the search functions: the SQL functions declare
# the same (tests/integration/test_sql_docs.py compares them with pg_proc), the CLI and
# Platform take them from here.
DEFAULT_K = 10
"""Rows a search returns unless told otherwise (``embedplat.search``, ``hybrid_search``,
``similar``)."""
MAX_K = 10_000
"""Most rows one call of ``embedplat.search`` / ``hybrid_search`` / ``similar`` returns."""
DEFAULT_RRF_K = 60
"""Reciprocal rank fusion constant of ``embedplat.hybrid_search``."""
MAX_EF_SEARCH = 1000
"""Largest ``ef_search`` the search functions accept (pgvector's own limit)."""
MAX_PROBES = 32_768
"""Largest ``probes`` the search functions accept (pgvector's own limit)."""


class SearchKwargs(TypedDict, total=False):
    """Keyword options of :meth:`Platform.search` and friends, besides ``k`` and ``filter``
    (the fields of :class:`SearchOptions`)."""

    hybrid: bool
    min_similarity: float | None
    per_record: bool
    ef_search: int | None
    probes: int | None
    vector_weight: float
    text_weight: float
    rrf_k: int


class SearchOptionFields(SearchKwargs, total=False):
    """Every field of :class:`SearchOptions` as keyword arguments."""

    k: int
    filter: Filter


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """How to search, checked when built (:class:`InvalidInputError`).

    ``k``: rows to return (1..:data:`MAX_K`); ``filter``: the filter language
    (docs/filters.md); ``hybrid``: fuse full-text and vector ranks (text queries only);
    ``min_similarity`` / ``per_record``: vector search only; ``ef_search`` / ``probes``: the
    index's query-time knobs for this call; ``vector_weight`` / ``text_weight`` / ``rrf_k``:
    hybrid search only. Each default is that of the SQL function.
    """

    k: int = DEFAULT_K
    filter: Filter = None
    hybrid: bool = False
    min_similarity: float | None = None
    per_record: bool = True
    ef_search: int | None = None
    probes: int | None = None
    vector_weight: float = 1.0
    text_weight: float = 1.0
    rrf_k: int = DEFAULT_RRF_K

    def __post_init__(self) -> None:
        k = self.k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
        if self.ef_search is not None and not 1 <= self.ef_search <= MAX_EF_SEARCH:
            raise InvalidInputError(
                f"ef_search must be between 1 and {MAX_EF_SEARCH}, got {self.ef_search}"
            )
        if self.probes is not None and not 1 <= self.probes <= MAX_PROBES:
            raise InvalidInputError(f"probes must be between 1 and {MAX_PROBES}, got {self.probes}")
        if self.min_similarity is not None and not -1.0 <= self.min_similarity <= 1.0:
            raise InvalidInputError(
                "min_similarity must be a cosine similarity between -1 and 1, "
                f"got {self.min_similarity}"
            )
        for name, weight in (
            ("vector_weight", self.vector_weight),
            ("text_weight", self.text_weight),
        ):
            if not math.isfinite(weight) or weight < 0:
                raise InvalidInputError(
                    f"{name} must be a finite number of at least 0, got {weight}"
                )
        if self.vector_weight == 0 and self.text_weight == 0:
            raise InvalidInputError("vector_weight and text_weight cannot both be 0")
        if self.rrf_k < 0:
            raise InvalidInputError(f"rrf_k must be at least 0, got {self.rrf_k}")
        # Checked and normalised once, here: every later use sends plain JSON.
        object.__setattr__(self, "filter", validate_filter(self.filter) or None)

    @classmethod
    def of(
        cls, options: SearchOptions | None = None, **fields: Unpack[SearchOptionFields]
    ) -> SearchOptions:
        """``options`` (default: all defaults) with ``fields`` replaced."""
        base = options if options is not None else cls()
        return dataclasses.replace(base, **fields) if fields else base

    def filter_json(self) -> str:
        """The filter as JSON text for a ``jsonb`` parameter (``{}``: none)."""
        return json.dumps(self.filter or {}, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One record (or chunk) found by a search: external id, similarity, chunk, metadata.

    ``chunk_ordinal``/``char_start``/``char_end`` locate the chunk in the record's content.
    """

    id: str
    score: float
    chunk: str
    metadata: dict[str, Any]
    chunk_ordinal: int | None = None
    char_start: int | None = None
    char_end: int | None = None

    def to_json(self) -> dict[str, Any]:
        # "similarity" is the SQL column's name; "score" stays for existing scripts.
        return {
            "id": self.id,
            "similarity": self.score,
            "score": self.score,
            "chunk": self.chunk,
            "metadata": self.metadata,
            "chunk_ordinal": self.chunk_ordinal,
        }

    @classmethod
    def from_row(cls, row: Any) -> SearchHit:
        """From a row of ``embedplat.search``/``similar`` (attribute access by column name)."""
        return cls(
            **_hit_fields(row),
            score=float(row.similarity),
            char_start=_int_or_none(getattr(row, "char_start", None)),
            char_end=_int_or_none(getattr(row, "char_end", None)),
        )


@dataclass(frozen=True, slots=True)
class HybridHit(SearchHit):
    """A hit of hybrid search: ``score`` is the fused RRF score (higher = better).

    ``similarity`` / ``vector_rank``: cosine similarity and 1-based rank in the vector list;
    ``text_score`` / ``text_rank``: BM25 (plain words) or ts_rank_cd score and rank in the
    full-text list (None: absent).
    """

    similarity: float | None = None
    text_score: float | None = None
    vector_rank: int | None = None
    text_rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        # SearchHit.to_json explicitly: zero-argument super() fails in a slots dataclass.
        # As in SQL's hybrid_hit, "score" is the fused score, "similarity" the cosine one.
        return {
            **SearchHit.to_json(self),
            "similarity": self.similarity,
            "text_score": self.text_score,
            "vector_rank": self.vector_rank,
            "text_rank": self.text_rank,
        }

    @classmethod
    def from_row(cls, row: Any) -> HybridHit:
        """From a row of ``embedplat.hybrid_search``."""
        return cls(
            **_hit_fields(row),
            score=float(row.score),
            similarity=None if row.similarity is None else float(row.similarity),
            text_score=None if row.text_score is None else float(row.text_score),
            vector_rank=_int_or_none(row.vector_rank),
            text_rank=_int_or_none(row.text_rank),
        )


def search_vector(
    conn: Connection,
    collection: str,
    vector: Sequence[float] | np.ndarray,
    options: SearchOptions | None = None,
    *,
    query_model: str | None = None,
    query_fingerprint: str | None = None,
    **fields: Unpack[SearchOptionFields],
) -> list[SearchHit]:
    """Call ``embedplat.search`` with a query vector (see docs/sql.md for the arguments).

    ``options`` and/or keyword ``fields`` (those of :class:`SearchOptions`; ``k``, ``filter``,
    ``min_similarity``, ``per_record``, ``ef_search`` and ``probes`` apply).
    ``query_model`` / ``query_fingerprint``: the name and fingerprint (in full, or a prefix of
    at least 12 characters) of the model ``vector`` was embedded with; unless that is the
    collection's active model the database refuses the call with
    :class:`~embedplat.errors.ModelMismatchError` naming both, also when the dimensions agree.
    None: only the dimension is checked.
    """
    opts = SearchOptions.of(options, **fields)
    rows = _fetch(
        conn,
        "SELECT id, chunk, similarity, metadata, chunk_ordinal, char_start, char_end "
        "FROM embedplat.search(%s, %s::vector, k => %s, filter => %s::jsonb, "
        "min_similarity => %s, per_record => %s, ef_search => %s, probes => %s, "
        "query_model => %s, query_fingerprint => %s)",
        (
            collection,
            query_vector_literal(vector),
            opts.k,
            opts.filter_json(),
            opts.min_similarity,
            opts.per_record,
            opts.ef_search,
            opts.probes,
            query_model,
            query_fingerprint,
        ),
    )
    return [SearchHit.from_row(row) for row in rows]


def hybrid_search_vector(
    conn: Connection,
    collection: str,
    query_text: str | None,
    vector: Sequence[float] | np.ndarray | None,
    options: SearchOptions | None = None,
    *,
    query_model: str | None = None,
    query_fingerprint: str | None = None,
    **fields: Unpack[SearchOptionFields],
) -> list[HybridHit]:
    """Call ``embedplat.hybrid_search`` (full-text + vector, reciprocal rank fusion).

    ``k``, ``filter``, ``vector_weight``, ``text_weight``, ``rrf_k``, ``ef_search`` and
    ``probes`` of the options apply; ``query_model`` / ``query_fingerprint`` as in
    :func:`search_vector` (compared only when the vector is searched).
    """
    opts = SearchOptions.of(options, **fields)
    if query_text is None and vector is None:
        raise InvalidInputError("give a query text, a query vector, or both")
    rows = _fetch(
        conn,
        "SELECT id, chunk, score, similarity, text_score, vector_rank, text_rank, metadata, "
        "chunk_ordinal FROM embedplat.hybrid_search(%s, %s, %s::vector, k => %s, "
        "filter => %s::jsonb, vector_weight => %s, text_weight => %s, rrf_k => %s, "
        "ef_search => %s, probes => %s, query_model => %s, query_fingerprint => %s)",
        (
            collection,
            query_text,
            None if vector is None else query_vector_literal(vector),
            opts.k,
            opts.filter_json(),
            opts.vector_weight,
            opts.text_weight,
            opts.rrf_k,
            opts.ef_search,
            opts.probes,
            query_model,
            query_fingerprint,
        ),
    )
    return [HybridHit.from_row(row) for row in rows]


def similar_records(
    conn: Connection,
    collection: str,
    external_id: str,
    options: SearchOptions | None = None,
    **fields: Unpack[SearchOptionFields],
) -> list[SearchHit]:
    """Call ``embedplat.similar``: the records nearest to record ``external_id``, not itself.

    ``k``, ``filter``, ``ef_search`` and ``probes`` of the options apply.
    """
    opts = SearchOptions.of(options, **fields)
    rows = _fetch(
        conn,
        "SELECT id, chunk, similarity, metadata, chunk_ordinal, char_start, char_end "
        "FROM embedplat.similar(%s, %s, k => %s, filter => %s::jsonb, ef_search => %s, "
        "probes => %s)",
        (collection, external_id, opts.k, opts.filter_json(), opts.ef_search, opts.probes),
    )
    return [SearchHit.from_row(row) for row in rows]


# -- helpers ------------------------------------------------------------------------------------


def check_query_text(text: object) -> str:
    """``text`` when it can be a query, else :class:`InvalidInputError`: not a string, blank,
    holding NUL (PostgreSQL text cannot) or a lone surrogate (not encodable as UTF-8)."""
    if not isinstance(text, str):
        raise InvalidInputError(f"a query must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError("a query must not be blank")
    if "\x00" in text:
        raise InvalidInputError("a query must not contain NUL characters (U+0000)")
    for char in text:
        if "\ud800" <= char <= "\udfff":
            raise InvalidInputError(
                f"a query must be valid Unicode: it holds a lone surrogate U+{ord(char):04X}"
            )
    return text


def query_vector_literal(vector: Sequence[float] | np.ndarray) -> str:
    """``vector`` as a pgvector literal for a query, or :class:`InvalidInputError` when the
    database would refuse it: not 1-D, empty, NaN or infinite elements, or no direction (all
    zeros, or so close to zero that its squared length underflows single precision, as in
    pgvector's cosine distance, which is then NaN; ``embedplat.check_query_dimensions``
    refuses the same in SQL)."""
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise InvalidInputError("a query vector must be a non-empty 1-D sequence of numbers")
    if not np.all(np.isfinite(array)):
        raise InvalidInputError("a query vector must not contain NaN or infinity")
    with np.errstate(over="ignore", under="ignore"):
        squared_length = np.sum(array * array, dtype=np.float32)
    if not (np.isfinite(squared_length) and squared_length > 0):
        raise InvalidInputError(
            "the query vector is all zeros (or too close to zero to measure): it has no "
            "direction, so no cosine similarity; pass a non-zero vector"
        )
    return vector_literal(array)


def _fetch(conn: Connection, query: str, params: Sequence[Any]) -> list[Any]:
    """Run one search function; its server errors become embedplat errors."""
    from psycopg.rows import namedtuple_row

    with server_errors(), conn.cursor(row_factory=namedtuple_row) as cur:
        return cur.execute(query, params).fetchall()


def _hit_fields(row: Any) -> dict[str, Any]:
    """The fields every kind of hit reads the same way from its row (all but the score)."""
    return {
        "id": str(row.id),
        "chunk": str(row.chunk),
        "metadata": dict(row.metadata or {}),
        "chunk_ordinal": _int_or_none(row.chunk_ordinal),
    }


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
