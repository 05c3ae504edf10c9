"""The DDL of a (collection, model) ANN index: HNSW or IVFFlat, per ``collections.index_options``.

Shared by the sync engine (which builds a missing index after a back-fill) and
:func:`embedplat.indexes.build_index` (which rebuilds one on request), so both build the same
index from the same options. Every value spliced into the statement is a number (ids,
dimensions, parameters) or an identifier quoted by psycopg; none comes from user text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

Connection = psycopg.Connection[Any]

HNSW_DEFAULT_M = 16
HNSW_DEFAULT_EF_CONSTRUCTION = 64


def default_lists(vectors: int) -> int:
    """pgvector's advice: rows / 1000 up to a million rows, sqrt(rows) beyond."""
    if vectors <= 1_000_000:
        return max(1, vectors // 1000)
    return int(math.sqrt(vectors))


def default_probes(lists: int) -> int:
    """pgvector's advice for a starting point: sqrt(lists)."""
    return max(1, round(math.sqrt(lists)))


def count_vectors(conn: Connection, collection_id: int, model_id: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM embedplat.embeddings WHERE collection_id = %s AND model_id = %s",
        (collection_id, model_id),
    ).fetchone()
    return int(row[0]) if row else 0


def ann_index_statement(
    conn: Connection,
    name: str,
    collection_id: int,
    model_id: int,
    dimensions: int,
    options: Mapping[str, Any],
) -> sql.Composed:
    """``CREATE INDEX CONCURRENTLY name ...`` for the options (``method`` hnsw by default).

    The expression ``(embedding::vector(N))`` and the predicate ``collection_id = C AND
    model_id = M`` are what the search functions repeat so that the planner can use the index.
    """
    method = str(options.get("method") or "hnsw")
    if method == "ivfflat":
        lists = options.get("lists")
        if lists is None:
            lists = default_lists(count_vectors(conn, collection_id, model_id))
        using = sql.SQL(
            "ivfflat ((embedding::vector({dims})) vector_cosine_ops) WITH (lists = {lists})"
        ).format(dims=sql.Literal(int(dimensions)), lists=sql.Literal(int(lists)))
    elif method == "hnsw":
        using = sql.SQL(
            "hnsw ((embedding::vector({dims})) vector_cosine_ops) "
            "WITH (m = {m}, ef_construction = {efc})"
        ).format(
            dims=sql.Literal(int(dimensions)),
            m=sql.Literal(int(options.get("m") or HNSW_DEFAULT_M)),
            efc=sql.Literal(int(options.get("ef_construction") or HNSW_DEFAULT_EF_CONSTRUCTION)),
        )
    else:
        raise ValueError(f"unknown index method {method!r}; use hnsw or ivfflat")
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY {name} ON embedplat.embeddings USING {using} "
        "WHERE collection_id = {cid} AND model_id = {mid}"
    ).format(
        name=sql.Identifier(name),
        using=using,
        cid=sql.Literal(int(collection_id)),
        mid=sql.Literal(int(model_id)),
    )
