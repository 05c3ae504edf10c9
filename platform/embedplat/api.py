"""The ``Platform`` facade: one object for everything embedplat does, from Python."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from embedplat import collections as _collections
from embedplat.collections import CollectionInfo
from embedplat.config import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_MODEL,
    Settings,
)
from embedplat.db import migrate
from embedplat.db.connection import check_database, connect, libpq_url, resolve_database_url
from embedplat.embedders import Embedder, load_embedder
from embedplat.errors import CollectionNotFoundError, SchemaNotReadyError
from embedplat.ingest import RecordInput, records_from_dicts
from embedplat.search import SearchHit, check_query_model, search_vector
from embedplat.status import CollectionStatus, collection_status
from embedplat.store import IngestResult, OnError, upsert_records
from embedplat.sync import (
    Progress,
    ReconcileReport,
    SyncOptions,
    SyncReport,
    reconcile,
    retry_failed,
)
from embedplat.sync import sync as run_sync

Connection = psycopg.Connection[Any]


class Platform:
    """A connection to one embedplat database.

    >>> platform = Platform.connect()          # EMBEDPLAT_DATABASE_URL, else the embedded server
    >>> platform.ingest("docs", [{"id": "a", "text": "hello"}])
    """

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self.url = url
        self.settings = settings or Settings.from_env()
        self._pool: ConnectionPool[Connection] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def connect(
        cls, url: str | None = None, *, settings: Settings | None = None, init: bool = False
    ) -> Platform:
        """Connect to ``url``, else ``EMBEDPLAT_DATABASE_URL``, else the embedded server.

        With ``init=True`` the schema is created or upgraded first (like `embedplat init`);
        otherwise a database without the schema raises :class:`SchemaNotReadyError`.
        """
        settings = settings or Settings.from_env()
        resolved = url or resolve_database_url(settings)
        check_database(resolved)
        if init:
            migrate.upgrade(resolved)
        elif migrate.current_revision(resolved) is None:
            raise SchemaNotReadyError(
                "the database has no embedplat schema yet: run `embedplat init` "
                "(or Platform.connect(init=True))"
            )
        return cls(resolved, settings)

    def close(self) -> None:
        """Close pooled connections."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection inside a transaction (committed on success, else rolled back)."""
        if self._pool is None:
            self._pool = ConnectionPool(
                libpq_url(self.url),
                min_size=1,
                max_size=4,
                kwargs={"connect_timeout": 10},
                open=True,
            )
        with self._pool.connection() as conn:
            yield conn

    # -- collections ------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        *,
        model: str = DEFAULT_MODEL,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        exist_ok: bool = False,
    ) -> CollectionInfo:
        """Create a collection (see `embedplat collection create`)."""
        with self.connection() as conn:
            return _collections.create_collection(
                conn,
                name,
                model=model,
                chunk_tokens=chunk_tokens,
                chunk_overlap=chunk_overlap,
                exist_ok=exist_ok,
            )

    def collection(self, name: str) -> CollectionInfo:
        """Look a collection up by name."""
        with self.connection() as conn:
            return _collections.get_collection(conn, name)

    def collections(self) -> list[CollectionInfo]:
        """All collections."""
        with self.connection() as conn:
            return _collections.list_collections(conn)

    def drop_collection(self, name: str) -> None:
        """Delete a collection and everything in it."""
        with self.connection() as conn:
            _collections.drop_collection(conn, name)

    # -- ingest -----------------------------------------------------------------------------

    def ingest(
        self,
        collection: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        id_field: str = "id",
        text_fields: Sequence[str] = ("text",),
        metadata_fields: Sequence[str] | None = None,
        on_error: OnError = "fail",
    ) -> IngestResult:
        """Upsert dicts into ``collection`` (created with defaults if missing).

        Returns counts (inserted / updated / metadata_updated / unchanged / rejected). With
        ``on_error="fail"`` a bad row raises :class:`~embedplat.errors.IngestError` and nothing
        from this call is written.
        """
        items = records_from_dicts(
            rows, id_field=id_field, text_fields=text_fields, metadata_fields=metadata_fields
        )
        return self.ingest_records(collection, items, on_error=on_error)

    def ingest_records(
        self,
        collection: str,
        items: Iterable[RecordInput | Any],
        *,
        on_error: OnError = "fail",
        progress: Callable[[int], None] | None = None,
    ) -> IngestResult:
        """Upsert already-parsed records (what the file readers yield) into ``collection``."""
        with self.connection() as conn:
            info = self._collection_or_default(conn, collection)
            return upsert_records(conn, info.id, items, on_error=on_error, progress=progress)

    def _collection_or_default(self, conn: Connection, name: str) -> CollectionInfo:
        try:
            return _collections.get_collection(conn, name)
        except CollectionNotFoundError:
            return _collections.create_collection(conn, name, exist_ok=True)

    # -- sync -------------------------------------------------------------------------------

    def embedder(self, model: str) -> Embedder:
        """The embedder for ``model`` (loaded once per process)."""
        return load_embedder(
            model, device=self.settings.device, batch_size=self.settings.batch_size
        )

    def new_connection(self) -> Connection:
        """A dedicated (non-pooled) connection, for long-running work such as sync."""
        return connect(self.url)

    def sync_options(self, **overrides: Any) -> SyncOptions:
        """Sync options from settings, with ``overrides``."""
        values: dict[str, Any] = {
            "batch_size": self.settings.batch_size,
            "lease_seconds": self.settings.lease_seconds,
            "max_attempts": self.settings.max_attempts,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return SyncOptions(**values)

    def sync(
        self,
        collection: str | None = None,
        *,
        options: SyncOptions | None = None,
        progress: Progress | None = None,
    ) -> SyncReport:
        """Chunk and embed everything stale (in one collection, or in all of them)."""
        return run_sync(
            self.new_connection,
            self.embedder,
            collection,
            options or self.sync_options(),
            progress,
        )

    def retry_failed(self, collection: str | None = None) -> int:
        """Re-queue parked work; returns how many items were re-queued."""
        with self.connection() as conn:
            cid = _collections.get_collection(conn, collection).id if collection else None
            return retry_failed(conn, cid)

    def reconcile(self, collection: str | None = None) -> ReconcileReport:
        """Find and repair drift the fast path cannot see (see :func:`embedplat.sync.reconcile`)."""
        with self.connection() as conn:
            cid = _collections.get_collection(conn, collection).id if collection else None
            return reconcile(conn, cid)

    # -- search -----------------------------------------------------------------------------

    def search(
        self,
        collection: str,
        query: str | Sequence[float] | np.ndarray,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
    ) -> list[SearchHit]:
        """The ``k`` records nearest to ``query`` (a text, or a vector of the collection's model)."""
        if isinstance(query, str):
            return self.search_many(collection, [query], k=k, filter=filter)[0]
        with self.connection() as conn:
            return search_vector(conn, collection, query, k=k, filter=filter)

    def search_many(
        self,
        collection: str,
        queries: Sequence[str],
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
    ) -> list[list[SearchHit]]:
        """Search several query texts, embedding them in one model call."""
        with self.connection() as conn:
            info = _collections.get_collection(conn, collection)
        embedder = self.embedder(info.model_name)
        with self.connection() as conn:
            check_query_model(conn, collection, embedder)
        vectors = embedder.embed(list(queries))
        results = []
        with self.connection() as conn:
            for vector in vectors:
                results.append(search_vector(conn, collection, vector, k=k, filter=filter))
        return results

    # -- status -----------------------------------------------------------------------------

    def status(self) -> list[CollectionStatus]:
        """Per-collection counts: records, chunks, embedded, stale, failed, queue lag."""
        with self.connection() as conn:
            return collection_status(conn)
