"""Everything about ANN indexes: names, DDL, the build after a back-fill, rebuilds, drops.

The index of a (collection, active model) is ``ix_embeddings_ann_c{C}_m{M}``, partial on
``collection_id = C AND model_id = M`` over ``(embedding::vector(N))``. A rebuild builds the new
index under a temporary name with ``CREATE INDEX CONCURRENTLY`` (the old one keeps serving),
then drops the old one concurrently and renames the new one: at every moment a valid index
exists, and writes are never blocked. The options are stored in ``collections.index_options``,
where the sync engine and the search functions read them (``ef_search`` / ``probes`` there are
the default query-time knobs). Every value spliced into a statement is a number (ids,
dimensions, parameters) or an identifier quoted by psycopg; none comes from user text.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from embedplat.collections import CollectionInfo, get_collection
from embedplat.db.locks import LockKey
from embedplat.errors import InvalidInputError

Connection = psycopg.Connection[Any]

METHODS = ("hnsw", "ivfflat")
HNSW_DEFAULT_M = 16
HNSW_DEFAULT_EF_CONSTRUCTION = 64
# A rebuild builds the new index under ``<name>_new`` before swapping it in.
_REBUILD_SUFFIX = "_new"


# -- names --------------------------------------------------------------------------------------


def ann_index_name(collection_id: int, model_id: int) -> str:
    """The name of the ANN index of (collection, model)."""
    return f"ix_embeddings_ann_c{int(collection_id)}_m{int(model_id)}"


def is_collection_index(index_name: str, collection_id: int) -> bool:
    """Whether ``index_name`` is an ANN index (or an unfinished rebuild) of that collection.

    An exact match, not a LIKE pattern: ``_`` is a LIKE wildcard, so a pattern for collection 1
    also matched collections 10-19.
    """
    pattern = rf"ix_embeddings_ann_c{int(collection_id)}_m[0-9]+(?:{_REBUILD_SUFFIX})?"
    return re.fullmatch(pattern, index_name) is not None


def index_model_id(index_name: str, collection_id: int) -> int | None:
    """The model id in the name of a (finished) ANN index of that collection, else None (an
    unfinished rebuild, ``_new``, or another collection's index)."""
    match = re.fullmatch(rf"ix_embeddings_ann_c{int(collection_id)}_m([0-9]+)", index_name)
    return None if match is None else int(match.group(1))


def collection_index_names(conn: Connection, collection_id: int) -> list[str]:
    """Names of every ANN index of the collection that exists now (any model, valid or not)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'embedplat' AND c.relkind = 'i' "
        "AND starts_with(c.relname::text, 'ix_embeddings_ann_c') ORDER BY c.relname"
    ).fetchall()
    return [str(r[0]) for r in rows if is_collection_index(str(r[0]), collection_id)]


# -- DDL --------------------------------------------------------------------------------------


def default_lists(vectors: int) -> int:
    """pgvector's advice: rows / 1000 up to a million rows, sqrt(rows) beyond."""
    if vectors <= 1_000_000:
        return max(1, vectors // 1000)
    return int(math.sqrt(vectors))


def default_probes(lists: int) -> int:
    """pgvector's advice for a starting point: sqrt(lists)."""
    return max(1, round(math.sqrt(lists)))


def count_vectors(conn: Connection, collection_id: int, model_id: int) -> int:
    """How many vectors (collection, model) holds."""
    row = conn.execute(
        "SELECT count(*) FROM embedplat.embeddings WHERE collection_id = %s AND model_id = %s",
        (collection_id, model_id),
    ).fetchone()
    return int(row[0]) if row else 0


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


def drop_index_concurrently(conn: Connection, name: str) -> None:
    conn.execute(
        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS embedplat.{}").format(sql.Identifier(name))
    )


def _index_is_valid(conn: Connection, name: str) -> bool | None:
    """True/False for a valid/invalid index called ``name``; None when there is none."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'embedplat' AND c.relname = %s",
        (name,),
    ).fetchone()
    return None if row is None else bool(row[0])


# -- the build after a back-fill --------------------------------------------------------------


def can_build_indexes(conn: Connection) -> bool:
    """Whether the current role may create indexes on the embeddings table (it must own it,
    or be a member of its owner: a worker role may embed but runs no DDL)."""
    row = conn.execute(
        "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c "
        "WHERE c.oid = 'embedplat.embeddings'::regclass"
    ).fetchone()
    return bool(row and row[0])


def index_is_missing(conn: Connection, collection_id: int, model_id: int) -> bool:
    """Whether (collection, model) holds vectors but has no valid ANN index."""
    valid = _index_is_valid(conn, ann_index_name(collection_id, model_id))
    return not valid and has_vectors(conn, collection_id, model_id)


def missing_index_note(collection: str) -> str:
    """What to tell a role that cannot build a missing index."""
    return (
        f"the ANN index of collection {collection!r} is missing and this role may not build "
        f"it (index builds need the schema owner): run `embedplat index {collection}` as the "
        "owner; searches work meanwhile, without the index"
    )


def ensure_ann_index(
    url_conn_factory: Callable[[], Connection],
    collection: CollectionInfo,
    model_id: int,
    dimensions: int,
    *,
    notes: list[str] | None = None,
) -> str | None:
    """Build the ANN index of (collection, model) if it is missing; returns its name if built.

    HNSW unless the collection's ``index_options`` say ``"method": "ivfflat"`` (see
    `embedplat index`). ``CREATE INDEX CONCURRENTLY`` keeps ingest and other collections
    writable meanwhile; an advisory lock keeps two processes from building the same index.
    A role that may not build indexes (see :func:`can_build_indexes`) builds nothing; when
    the index is missing, :func:`missing_index_note` is appended to ``notes``.
    """
    name = ann_index_name(collection.id, model_id)
    options = collection.index_options or {}
    with url_conn_factory() as conn:
        conn.autocommit = True
        if not can_build_indexes(conn):
            if notes is not None and index_is_missing(conn, collection.id, model_id):
                notes.append(missing_index_note(collection.name))
            return None
        got = conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (LockKey.ANN_INDEX_BUILD, collection.id)
        ).fetchone()
        if not got or not got[0]:
            return None
        try:
            valid = _index_is_valid(conn, name)
            if valid:
                return None
            if valid is not None:  # an interrupted concurrent build leaves an invalid index
                drop_index_concurrently(conn, name)
            if not has_vectors(conn, collection.id, model_id):
                return None
            conn.execute(
                ann_index_statement(conn, name, collection.id, model_id, dimensions, options)
            )
            return name
        finally:
            conn.execute(
                "SELECT pg_advisory_unlock(%s, %s)", (LockKey.ANN_INDEX_BUILD, collection.id)
            )


def has_vectors(conn: Connection, collection_id: int, model_id: int) -> bool:
    """Whether (collection, model) holds at least one vector (cheaper than a count)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM embedplat.embeddings "
        "WHERE collection_id = %s AND model_id = %s)",
        (collection_id, model_id),
    ).fetchone()
    return bool(row and row[0])


# -- drop -----------------------------------------------------------------------------------


def drop_collection_indexes(connect: Callable[[], Connection], collection_id: int) -> list[str]:
    """Drop every ANN index of the collection, concurrently, outside any transaction.

    ``DROP INDEX`` inside a transaction takes an ACCESS EXCLUSIVE lock on the shared
    embeddings table and would stall every other collection's readers; ``CONCURRENTLY`` does
    not. Returns the names dropped.
    """
    with connect() as conn:
        conn.autocommit = True
        names = collection_index_names(conn, collection_id)
        for name in names:
            drop_index_concurrently(conn, name)
    return names


# -- rebuild on request ---------------------------------------------------------------------


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
        temporary = name + _REBUILD_SUFFIX
        # Wait for a sync that is building this collection's index right now.
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (LockKey.ANN_INDEX_BUILD, info.id))
        try:
            # A build interrupted earlier leaves an invalid index behind.
            drop_index_concurrently(conn, temporary)
            conn.execute(
                ann_index_statement(conn, temporary, info.id, model_id, dimensions, options)
            )
            replaced = _index_is_valid(conn, name) is not None
            if replaced:
                drop_index_concurrently(conn, name)
            conn.execute(
                sql.SQL("ALTER INDEX embedplat.{} RENAME TO {}").format(
                    sql.Identifier(temporary), sql.Identifier(name)
                )
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LockKey.ANN_INDEX_BUILD, info.id))
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
