"""Index control: (re)build a collection's ANN index without interrupting searches.

The index of a (collection, active model) is ``ix_embeddings_ann_c{C}_m{M}``, partial on
``collection_id = C AND model_id = M`` over ``(embedding::vector(N))``. A rebuild builds the new
index under a temporary name with ``CREATE INDEX CONCURRENTLY`` (the old one keeps serving),
then drops the old one concurrently and renames the new one: at every moment a valid index
exists, and writes are never blocked. The options are stored in ``collections.index_options``,
where the sync engine and the search functions read them (``ef_search`` / ``probes`` there are
the default query-time knobs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from embedplat.collections import get_collection
from embedplat.db.ann import (
    HNSW_DEFAULT_EF_CONSTRUCTION,
    HNSW_DEFAULT_M,
    ann_index_statement,
    count_vectors,
    default_lists,
    default_probes,
)
from embedplat.errors import InvalidInputError
from embedplat.sync import ann_index_name

Connection = psycopg.Connection[Any]

METHODS = ("hnsw", "ivfflat")
# Same key as the sync engine's index build, so the two never build one index at once.
_ADVISORY_LOCK_CLASS = 7240515


@dataclass(frozen=True, slots=True)
class IndexReport:
    """What :func:`build_index` did."""

    collection: str
    method: str
    options: dict[str, Any]
    index: str | None = None
    built: bool = False
    replaced: bool = False
    vectors: int = 0
    seconds: float = 0.0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "index": self.index,
            "method": self.method,
            "options": self.options,
            "built": self.built,
            "replaced": self.replaced,
            "vectors": self.vectors,
            "seconds": round(self.seconds, 3),
            "note": self.note,
        }


def index_options(
    method: str = "hnsw",
    *,
    m: int | None = None,
    ef_construction: int | None = None,
    lists: int | None = None,
    ef_search: int | None = None,
    probes: int | None = None,
) -> dict[str, Any]:
    """Validated ``index_options`` (without ``lists`` defaults, which need the row count)."""
    if method not in METHODS:
        raise InvalidInputError(f"--method must be hnsw or ivfflat, got {method!r}")
    if ef_search is not None and not 1 <= ef_search <= 1000:
        raise InvalidInputError(f"--ef-search must be between 1 and 1000, got {ef_search}")
    if probes is not None and not 1 <= probes <= 32768:
        raise InvalidInputError(f"--probes must be between 1 and 32768, got {probes}")
    options: dict[str, Any] = {"method": method}
    if method == "hnsw":
        if lists is not None or probes is not None:
            raise InvalidInputError(
                "--lists and --probes are IVFFlat options; use --method ivfflat"
            )
        m = HNSW_DEFAULT_M if m is None else m
        ef_construction = (
            HNSW_DEFAULT_EF_CONSTRUCTION if ef_construction is None else ef_construction
        )
        if not 2 <= m <= 100:
            raise InvalidInputError(f"--m must be between 2 and 100, got {m}")
        if not 4 <= ef_construction <= 1000:
            raise InvalidInputError(
                f"--ef-construction must be between 4 and 1000, got {ef_construction}"
            )
        if ef_construction < 2 * m:
            raise InvalidInputError(
                f"--ef-construction must be at least twice --m ({2 * m}), got {ef_construction}"
            )
        options.update(m=m, ef_construction=ef_construction)
        if ef_search is not None:
            options["ef_search"] = ef_search
    else:
        if m is not None or ef_construction is not None or ef_search is not None:
            raise InvalidInputError(
                "--m, --ef-construction and --ef-search are HNSW options; use --method hnsw"
            )
        if lists is not None:
            if not 1 <= lists <= 32768:
                raise InvalidInputError(f"--lists must be between 1 and 32768, got {lists}")
            options["lists"] = lists
        if probes is not None:
            options["probes"] = probes
    return options


def build_index(
    connect: Callable[[], Connection],
    collection: str,
    *,
    method: str = "hnsw",
    m: int | None = None,
    ef_construction: int | None = None,
    lists: int | None = None,
    ef_search: int | None = None,
    probes: int | None = None,
) -> IndexReport:
    """Store the index options of ``collection`` and (re)build its ANN index concurrently.

    Without vectors yet, only the options are stored; the sync engine builds the index with
    them after the first back-fill.
    """
    options = index_options(
        method,
        m=m,
        ef_construction=ef_construction,
        lists=lists,
        ef_search=ef_search,
        probes=probes,
    )
    started = time.perf_counter()
    with connect() as conn:
        conn.autocommit = True
        info = get_collection(conn, collection)
        model = conn.execute(
            "SELECT m.id, m.dimensions FROM embedplat.collections c "
            "JOIN embedplat.embedding_models m ON m.id = c.active_model_id WHERE c.id = %s",
            (info.id,),
        ).fetchone()
        vectors = count_vectors(conn, info.id, int(model[0])) if model else 0
        if method == "ivfflat":
            options.setdefault("lists", default_lists(vectors))
            options.setdefault("probes", default_probes(int(options["lists"])))
        conn.execute(
            "UPDATE embedplat.collections SET index_options = %s WHERE id = %s",
            (Jsonb(options), info.id),
        )
        if model is None or vectors == 0:
            return IndexReport(
                collection=info.name,
                method=method,
                options=options,
                note="nothing embedded yet: the options are stored, and the next sync builds the index",
                seconds=time.perf_counter() - started,
            )
        model_id, dimensions = int(model[0]), int(model[1])
        name = ann_index_name(info.id, model_id)
        temporary = f"{name}_new"
        # Wait for a sync that is building this collection's index right now.
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (_ADVISORY_LOCK_CLASS, info.id))
        try:
            # A build interrupted earlier leaves an invalid index behind.
            conn.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS embedplat.{}").format(
                    sql.Identifier(temporary)
                )
            )
            conn.execute(
                ann_index_statement(conn, temporary, info.id, model_id, dimensions, options)
            )
            replaced = _index_exists(conn, name)
            if replaced:
                conn.execute(
                    sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS embedplat.{}").format(
                        sql.Identifier(name)
                    )
                )
            conn.execute(
                sql.SQL("ALTER INDEX embedplat.{} RENAME TO {}").format(
                    sql.Identifier(temporary), sql.Identifier(name)
                )
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_ADVISORY_LOCK_CLASS, info.id))
    return IndexReport(
        collection=info.name,
        method=method,
        options=options,
        index=name,
        built=True,
        replaced=replaced,
        vectors=vectors,
        seconds=time.perf_counter() - started,
    )


def _index_exists(conn: Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'embedplat' AND c.relname = %s AND c.relkind = 'i'",
        (name,),
    ).fetchone()
    return row is not None
