"""Python side of ``embedplat.search``: typed hits, query embedding bound to the right model."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from embedplat.db.vectors import vector_literal
from embedplat.embedders import Embedder
from embedplat.errors import CollectionNotFoundError, InvalidInputError, ModelMismatchError

Connection = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One record found by a search: its external id, similarity, best chunk and metadata."""

    id: str
    score: float
    chunk: str
    metadata: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "chunk": self.chunk, "metadata": self.metadata}


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
    filter: Mapping[str, Any] | None = None,
) -> list[SearchHit]:
    """Call ``embedplat.search`` with a query vector."""
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise InvalidInputError("a query vector must be a non-empty 1-D sequence of numbers")
    if not np.all(np.isfinite(array)):
        raise InvalidInputError("a query vector must not contain NaN or infinity")
    if filter is not None and not isinstance(filter, Mapping):
        raise InvalidInputError('filter must be a JSON object, e.g. {"topic": "sport"}')
    try:
        rows = conn.execute(
            "SELECT id, chunk, similarity, metadata "
            "FROM embedplat.search(%s, %s::vector, %s, %s::jsonb)",
            (collection, vector_literal(array), k, json.dumps(dict(filter or {}))),
        ).fetchall()
    except psycopg.errors.UndefinedObject as exc:
        raise CollectionNotFoundError(_server_message(exc)) from None
    except psycopg.errors.DataException as exc:
        raise ModelMismatchError(_server_message(exc)) from None
    except psycopg.errors.InvalidParameterValue as exc:
        raise InvalidInputError(_server_message(exc)) from None
    return [SearchHit(str(r[0]), float(r[2]), str(r[1]), dict(r[3])) for r in rows]


def _server_message(exc: psycopg.Error) -> str:
    diag = exc.diag.message_primary
    return diag if diag else str(exc)
