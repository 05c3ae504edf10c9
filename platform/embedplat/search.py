"""Python side of ``embedplat.search``, ``embedplat.hybrid_search`` and ``embedplat.similar``.

Typed hits, query vectors bound to the collection's model, filters validated before any query
runs (:mod:`embedplat.filters`), and server errors turned into embedplat errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from embedplat.db.vectors import vector_literal
from embedplat.embedders import Embedder
from embedplat.errors import (
    CollectionNotFoundError,
    FilterError,
    InvalidInputError,
    ModelMismatchError,
    RecordNotFoundError,
)
from embedplat.filters import validate_filter

Connection = psycopg.Connection[Any]
Filter = Mapping[str, Any] | None


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
        return {
            "id": self.id,
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
    ``text_score`` / ``text_rank``: ts_rank_cd and rank in the full-text list (None: absent).
    """

    similarity: float | None = None
    text_score: float | None = None
    vector_rank: int | None = None
    text_rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        # SearchHit.to_json explicitly: zero-argument super() fails in a slots dataclass.
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


def active_model(conn: Connection, collection: str) -> tuple[str, str, int] | None:
    """(name, fingerprint, dimensions) of the collection's active model; None before any sync."""
    row = conn.execute(
        "SELECT m.name, m.fingerprint, m.dimensions, c.id FROM embedplat.collections c "
        "LEFT JOIN embedplat.embedding_models m ON m.id = c.active_model_id WHERE c.name = %s",
        (collection,),
    ).fetchone()
    if row is None:
        raise CollectionNotFoundError(
            f"no collection named {collection!r}; see `embedplat collection list`"
        )
    if row[0] is None:
        return None
    return str(row[0]), str(row[1]), int(row[2])


def check_query_model(conn: Connection, collection: str, embedder: Embedder) -> None:
    """Refuse to search a collection with vectors of another model."""
    active = active_model(conn, collection)
    if active is None:
        return
    name, fingerprint, _ = active
    if fingerprint != embedder.fingerprint or name != embedder.name:
        raise ModelMismatchError(
            f"collection {collection!r} is embedded with {name} (fingerprint {fingerprint[:12]}); "
            f"the query was embedded with {embedder.name} (fingerprint {embedder.fingerprint[:12]})"
        )


def search_vector(
    conn: Connection,
    collection: str,
    vector: Sequence[float] | np.ndarray,
    *,
    k: int = 10,
    filter: Filter = None,
    min_similarity: float | None = None,
    per_record: bool = True,
    ef_search: int | None = None,
    probes: int | None = None,
) -> list[SearchHit]:
    """Call ``embedplat.search`` with a query vector (see docs/sql.md for the arguments)."""
    _check_k(k)
    _check_knobs(ef_search, probes)
    if min_similarity is not None and not -1.0 <= min_similarity <= 1.0:
        raise InvalidInputError(
            f"min_similarity must be a cosine similarity between -1 and 1, got {min_similarity}"
        )
    rows = _fetch(
        conn,
        "SELECT id, chunk, similarity, metadata, chunk_ordinal, char_start, char_end "
        "FROM embedplat.search(%s, %s::vector, k => %s, filter => %s::jsonb, "
        "min_similarity => %s, per_record => %s, ef_search => %s, probes => %s)",
        (
            collection,
            _vector(vector),
            k,
            _filter_json(filter),
            min_similarity,
            per_record,
            ef_search,
            probes,
        ),
    )
    return [SearchHit.from_row(row) for row in rows]


def hybrid_search_vector(
    conn: Connection,
    collection: str,
    query_text: str | None,
    vector: Sequence[float] | np.ndarray | None,
    *,
    k: int = 10,
    filter: Filter = None,
    vector_weight: float = 1.0,
    text_weight: float = 1.0,
    rrf_k: int = 60,
    ef_search: int | None = None,
    probes: int | None = None,
) -> list[HybridHit]:
    """Call ``embedplat.hybrid_search`` (full-text + vector, reciprocal rank fusion)."""
    _check_k(k)
    _check_knobs(ef_search, probes)
    for name, weight in (("vector_weight", vector_weight), ("text_weight", text_weight)):
        if not math.isfinite(weight) or weight < 0:
            raise InvalidInputError(f"{name} must be a finite number of at least 0, got {weight}")
    if vector_weight == 0 and text_weight == 0:
        raise InvalidInputError("vector_weight and text_weight cannot both be 0")
    if rrf_k < 0:
        raise InvalidInputError(f"rrf_k must be at least 0, got {rrf_k}")
    if query_text is None and vector is None:
        raise InvalidInputError("give a query text, a query vector, or both")
    rows = _fetch(
        conn,
        "SELECT id, chunk, score, similarity, text_score, vector_rank, text_rank, metadata, "
        "chunk_ordinal FROM embedplat.hybrid_search(%s, %s, %s::vector, k => %s, "
        "filter => %s::jsonb, vector_weight => %s, text_weight => %s, rrf_k => %s, "
        "ef_search => %s, probes => %s)",
        (
            collection,
            query_text,
            None if vector is None else _vector(vector),
            k,
            _filter_json(filter),
            vector_weight,
            text_weight,
            rrf_k,
            ef_search,
            probes,
        ),
    )
    return [HybridHit.from_row(row) for row in rows]


def similar_records(
    conn: Connection,
    collection: str,
    external_id: str,
    *,
    k: int = 10,
    filter: Filter = None,
    ef_search: int | None = None,
    probes: int | None = None,
) -> list[SearchHit]:
    """Call ``embedplat.similar``: the records nearest to record ``external_id``, not itself."""
    _check_k(k)
    _check_knobs(ef_search, probes)
    rows = _fetch(
        conn,
        "SELECT id, chunk, similarity, metadata, chunk_ordinal, char_start, char_end "
        "FROM embedplat.similar(%s, %s, k => %s, filter => %s::jsonb, ef_search => %s, "
        "probes => %s)",
        (collection, external_id, k, _filter_json(filter), ef_search, probes),
    )
    return [SearchHit.from_row(row) for row in rows]


# -- helpers ------------------------------------------------------------------------------------


def _vector(vector: Sequence[float] | np.ndarray) -> str:
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise InvalidInputError("a query vector must be a non-empty 1-D sequence of numbers")
    if not np.all(np.isfinite(array)):
        raise InvalidInputError("a query vector must not contain NaN or infinity")
    return vector_literal(array)


def _filter_json(filter: Filter) -> str:
    return json.dumps(validate_filter(filter), ensure_ascii=False)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10000:
        raise InvalidInputError(f"k must be an integer between 1 and 10000, got {k!r}")


def _check_knobs(ef_search: int | None, probes: int | None) -> None:
    if ef_search is not None and not 1 <= ef_search <= 1000:
        raise InvalidInputError(f"ef_search must be between 1 and 1000, got {ef_search}")
    if probes is not None and not 1 <= probes <= 32768:
        raise InvalidInputError(f"probes must be between 1 and 32768, got {probes}")


def _fetch(conn: Connection, query: str, params: Sequence[Any]) -> list[Any]:
    """Run one search function; server errors become embedplat errors."""
    from psycopg.rows import namedtuple_row

    try:
        with conn.cursor(row_factory=namedtuple_row) as cur:
            return cur.execute(query, params).fetchall()
    except psycopg.errors.UndefinedObject as exc:
        raise CollectionNotFoundError(_server_message(exc)) from None
    except psycopg.errors.NoDataFound as exc:
        raise RecordNotFoundError(_server_message(exc)) from None
    except psycopg.errors.InvalidParameterValue as exc:
        message = _server_message(exc)
        if message.startswith("embedplat filter"):
            raise FilterError(message) from None
        raise InvalidInputError(message) from None
    except (
        psycopg.errors.NullValueNotAllowed,
        psycopg.errors.ObjectNotInPrerequisiteState,
    ) as exc:
        raise InvalidInputError(_server_message(exc)) from None
    except psycopg.errors.DataException as exc:
        # Raised for a query vector of another dimension than the collection's model.
        raise ModelMismatchError(_server_message(exc)) from None


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


def _server_message(exc: psycopg.Error) -> str:
    diag = exc.diag.message_primary
    return diag if diag else str(exc)
