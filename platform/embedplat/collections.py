"""Collections: create, list, look up, drop."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from embedplat.config import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL
from embedplat.embedders.registry import remember_registration
from embedplat.errors import (
    CollectionBusyError,
    CollectionExistsError,
    CollectionNotFoundError,
    InvalidInputError,
)
from embedplat.models import REGISTRATION_COLUMNS, registration_from_row

Connection = psycopg.Connection[Any]

MAX_NAME_LENGTH = 200
# Unicode categories refused in names: controls (Cc: NUL, newline, tab, ESC), formats (Cf:
# bidi overrides and isolates, zero-width characters), surrogates (Cs), private use (Co),
# unassigned (Cn), and line/paragraph separators (Zl, Zp).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """A collection's configuration."""

    id: int
    name: str
    model_name: str
    chunk_tokens: int
    chunk_overlap: int
    active_model_id: int | None
    index_options: dict[str, Any]
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape of `embedplat collection list --json`)."""
        return {
            "name": self.name,
            "model": self.model_name,
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap": self.chunk_overlap,
            "index_options": self.index_options,
            "created_at": self.created_at.isoformat(),
        }


# The collection's model registration comes along (NULL columns: the name is not registered),
# so whoever looks a collection up before loading its model (sync, search) resolves a
# registered name the way the database says (embedplat.embedders.registry).
_SELECT = (
    """
SELECT c.id, c.name, c.model_name, c.chunk_tokens, c.chunk_overlap, c.active_model_id,
       c.index_options, c.created_at, """
    + ", ".join(f"r.{column} AS registered_{column}" for column in REGISTRATION_COLUMNS)
    + """
FROM embedplat.collections c
LEFT JOIN embedplat.registered_models r ON r.name = c.model_name
"""
)


def _collection_from_row(row: dict[str, Any]) -> CollectionInfo:
    """The collection of a ``_SELECT`` row; its model's registration is remembered."""
    registered = registration_from_row(row, prefix="registered_")
    remember_registration(row["model_name"], registered)
    return CollectionInfo(**{k: v for k, v in row.items() if not k.startswith("registered_")})


def validate_collection_name(name: str) -> str:
    """Names are free text (they are always passed as values, never spliced into SQL), but
    printable: no control characters (newline, tab, NUL, ...), no bidirectional overrides that
    make a name display as another (U+202E), no unpaired surrogates, no surrounding spaces."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("a collection name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInputError(f"a collection name may have at most {MAX_NAME_LENGTH} characters")
    for char in name:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise InvalidInputError(
                f"a collection name may not contain the character U+{ord(char):04X} "
                f"({unicodedata.name(char, 'control or format character')}); "
                "use letters, digits, spaces and punctuation"
            )
    if name != name.strip():
        raise InvalidInputError("a collection name may not start or end with spaces")
    return name


def validate_chunking(chunk_tokens: int, chunk_overlap: int) -> None:
    """Reject chunk sizes the chunker cannot honour, before anything is stored."""
    if chunk_tokens < 8 or chunk_tokens > 8192:
        raise InvalidInputError(f"--chunk-tokens must be between 8 and 8192, got {chunk_tokens}")
    if chunk_overlap < 0 or chunk_overlap >= chunk_tokens:
        raise InvalidInputError(
            f"--chunk-overlap must be at least 0 and below --chunk-tokens ({chunk_tokens}), "
            f"got {chunk_overlap}"
        )


def create_collection(
    conn: Connection,
    name: str,
    *,
    model: str = DEFAULT_MODEL,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    exist_ok: bool = False,
) -> CollectionInfo:
    """Create a collection; with ``exist_ok`` return the existing one instead of failing."""
    validate_collection_name(name)
    validate_chunking(chunk_tokens, chunk_overlap)
    if not model or not model.strip():
        raise InvalidInputError("--model must name an embedding model")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
            (name, model, chunk_tokens, chunk_overlap),
        )
        created = cur.fetchone() is not None
    if not created and not exist_ok:
        raise CollectionExistsError(
            f"collection {name!r} already exists; drop it first or pick another name"
        )
    return get_collection(conn, name)


def get_collection(conn: Connection, name: str) -> CollectionInfo:
    """The collection called ``name``; :class:`CollectionNotFoundError` if there is none."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SELECT + "WHERE c.name = %s", (name,)).fetchone()
    if row is None:
        raise CollectionNotFoundError(
            f"no collection named {name!r}; see `embedplat collection list`"
        )
    return _collection_from_row(row)


def list_collections(conn: Connection) -> list[CollectionInfo]:
    """All collections, by name."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_SELECT + "ORDER BY c.name").fetchall()
    return [_collection_from_row(row) for row in rows]


def drop_collection(conn: Connection, name: str) -> int:
    """Delete a collection with its records, chunks, embeddings and queued work.

    Returns the collection's id. Its ANN indexes are left to
    :func:`embedplat.indexes.drop_collection_indexes`, which drops them concurrently once this
    transaction has committed (a ``DROP INDEX`` in here would lock every reader of the shared
    embeddings table until the commit).
    """
    info = get_collection(conn, name)
    # An attached collection's delete drops the triggers on the app's table (an AFTER DELETE
    # trigger on embedplat.attachments), which needs a brief exclusive lock on that table:
    # give up with a clear error rather than queue the app's writers behind us.
    conn.execute("SET LOCAL lock_timeout = '5s'")
    try:
        conn.execute("DELETE FROM embedplat.collections WHERE id = %s", (info.id,))
    except psycopg.errors.LockNotAvailable as exc:
        raise CollectionBusyError(
            f"collection {name!r} could not be dropped: its attached table or its rows stayed "
            "locked by other transactions for 5 s; try again when they are done"
        ) from exc
    return info.id
