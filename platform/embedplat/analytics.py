"""Python side of ``embedplat.near_duplicates``, ``duplicate_groups`` and ``anomaly_scores``.

The work happens in the database (see ``sql/duplicates.v1.sql`` and ``sql/anomalies.v1.sql``);
these helpers bind the arguments, turn server errors into embedplat errors and return typed
rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from embedplat.errors import InvalidInputError, server_errors

Connection = psycopg.Connection[Any]

# The one source of these defaults and limits; the SQL functions declare the same
# (tests/integration/test_sql_docs.py compares them with pg_proc).
DEFAULT_DUPLICATE_THRESHOLD = 0.7
"""Default of ``embedplat.near_duplicates``: calibrated for all-MiniLM-L6-v2 (docs/sql.md)."""
DEFAULT_DUPLICATE_K = 10
"""Nearest chunks probed per chunk by ``near_duplicates`` / ``duplicate_groups``."""
DEFAULT_ANOMALY_K = 10
"""Nearest records averaged per score by ``anomaly_scores``."""
MAX_ANALYTICS_K = 1000
"""Largest ``k`` of ``near_duplicates``, ``duplicate_groups`` and ``anomaly_scores`` (each
probe reads k neighbours per chunk, so k bounds the work per chunk)."""


@dataclass(frozen=True, slots=True)
class DuplicatePair:
    """Two records (external ids, ``a < b``) whose similarity reached the threshold."""

    a: str
    b: str
    similarity: float

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "similarity": self.similarity}


@dataclass(frozen=True, slots=True)
class DuplicateGroupMember:
    """One record of a group of near-duplicates; ``keeper`` marks the one record to keep."""

    group: int
    id: str
    keeper: bool

    def to_json(self) -> dict[str, Any]:
        # "group_id" is the SQL column's name; "group" stays for existing scripts.
        return {"group_id": self.group, "group": self.group, "id": self.id, "keeper": self.keeper}


@dataclass(frozen=True, slots=True)
class AnomalyScore:
    """A record's anomaly score (higher = more anomalous), rank (1 = most) and percentile."""

    id: str
    score: float
    rank: int
    percentile: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": self.score,
            "rank": self.rank,
            "percentile": self.percentile,
        }


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_ANALYTICS_K:
        raise InvalidInputError(f"k must be an integer between 1 and {MAX_ANALYTICS_K}, got {k!r}")


def _check_threshold(threshold: float) -> None:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or math.isnan(threshold)
        or not -1.0 <= threshold <= 1.0
    ):
        raise InvalidInputError(
            f"threshold must be a cosine similarity between -1 and 1, got {threshold!r}"
        )


def _rows(conn: Connection, query: str, params: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    with server_errors():
        rows = conn.execute(query, params).fetchall()
    yield from rows


def near_duplicates(
    conn: Connection,
    collection: str,
    *,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    k: int = DEFAULT_DUPLICATE_K,
) -> list[DuplicatePair]:
    """Pairs of records whose similarity is at least ``threshold``, most similar first.

    ``k`` nearest chunks are probed per chunk through the HNSW index; identical content is
    found by content hash and reported with similarity 1.
    """
    _check_threshold(threshold)
    _check_k(k)
    return [
        DuplicatePair(str(a), str(b), float(s))
        for a, b, s in _rows(
            conn,
            "SELECT a, b, similarity FROM embedplat.near_duplicates(%s, %s::float8, %s)",
            (collection, threshold, k),
        )
    ]


def duplicate_groups(
    conn: Connection,
    collection: str,
    *,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    k: int = DEFAULT_DUPLICATE_K,
) -> list[DuplicateGroupMember]:
    """Connected groups of near-duplicates (largest first), keeper first in each group.

    The keeper is the group's oldest record (``created_at``), ties broken by external id.
    """
    _check_threshold(threshold)
    _check_k(k)
    return [
        DuplicateGroupMember(int(g), str(i), bool(keep))
        for g, i, keep in _rows(
            conn,
            "SELECT group_id, id, keeper FROM embedplat.duplicate_groups(%s, %s::float8, %s)",
            (collection, threshold, k),
        )
    ]


def anomaly_scores(
    conn: Connection,
    collection: str,
    *,
    k: int = DEFAULT_ANOMALY_K,
    reference: str | None = None,
    top: int | None = None,
) -> list[AnomalyScore]:
    """Anomaly score of every embedded record, most anomalous first (or the ``top`` ones).

    Without ``reference``: mean cosine distance to the ``k`` nearest other records of the
    collection. With ``reference``: to the ``k`` nearest records of that collection, which
    must be embedded with the same model (else :class:`ModelMismatchError`).
    """
    _check_k(k)
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise InvalidInputError(f"top must be a positive integer, got {top!r}")
    return [
        AnomalyScore(str(i), float(s), int(r), float(p))
        for i, s, r, p in _rows(
            conn,
            "SELECT id, score, rank, percentile FROM embedplat.anomaly_scores(%s, %s, %s) "
            "WHERE %s::bigint IS NULL OR rank <= %s::bigint ORDER BY rank",
            (collection, k, reference, top, top),
        )
    ]
