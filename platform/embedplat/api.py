"""The ``Platform`` facade: one object for everything embedplat does, from Python."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar, Unpack

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from embedplat import analytics as _analytics
from embedplat import attach as _attach
from embedplat import collections as _collections
from embedplat import export as _export
from embedplat import models as _models
from embedplat import switch as _switch
from embedplat.analytics import AnomalyScore, DuplicateGroupMember, DuplicatePair
from embedplat.attach import Attachment, AttachReport
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
from embedplat.embedders.backends import default_backend_of, model_variant, variant_name
from embedplat.errors import (
    CollectionNotFoundError,
    InvalidInputError,
    ModelMismatchError,
    SchemaNotReadyError,
)
from embedplat.indexes import IndexReport, drop_collection_indexes
from embedplat.indexes import build_index as _build_index
from embedplat.ingest import RecordInput, records_from_dicts
from embedplat.models import ModelAdded, ModelInfo
from embedplat.search import (
    DEFAULT_K,
    HybridHit,
    SearchHit,
    SearchKwargs,
    SearchOptions,
    check_query_text,
    hybrid_search_vector,
    search_vector,
    similar_records,
)
from embedplat.status import CollectionStatus, collection_status
from embedplat.store import IngestResult, OnError, upsert_records
from embedplat.switch import SwitchCancel, SwitchProgress, SwitchStart
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
T = TypeVar("T")


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
        backend: str | None = None,
    ) -> CollectionInfo:
        """Create a collection (see `embedplat collection create`).

        ``backend`` runs the model on another runtime (``onnx``, ``onnx-int8``, ``openvino``,
        ``openvino-int8``; :mod:`embedplat.embedders.backends`): the collection's model is then
        the variant ``MODEL@BACKEND``. None takes the settings' backend (``EMBEDPLAT_BACKEND``)
        unless ``model`` already names one. ``model`` must be servable here (:func:`~embedplat.models.require_model`, which loads
        nothing; a name registered with :meth:`add_model` resolves to its folder): an unknown
        name raises :class:`~embedplat.embedders.ModelUnavailableError` before anything is
        stored, rather than failing every later sync of the collection.
        """
        model = self.new_collection_model(model, backend)
        with self.connection() as conn:
            if model.strip():  # a blank name gets the collection layer's own error
                _models.require_model(conn, model)
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
        """Delete a collection and everything in it (its ANN indexes concurrently, after)."""
        with self.connection() as conn:
            collection_id = _collections.drop_collection(conn, name)
        drop_collection_indexes(self.new_connection, collection_id)

    # -- models -----------------------------------------------------------------------------

    def models(self, *, check: bool = False) -> list[ModelInfo]:
        """Every model the platform knows, with its source, facts, fingerprint and the
        collections using it (see `embedplat model list` and docs/models.md).

        Nothing is loaded: facts come from the models' config files. With ``check=True``
        each model is loaded (seconds per real model; all-mpnet-base-v2 is extracted on
        first use) and its loaded dimensions and fingerprint are reported, or why it failed.
        """
        with self.connection() as conn:
            infos = _models.list_models(conn)
        return _models.check_models(infos, self.embedder) if check else infos

    def add_model(
        self, name: str, path: str | os.PathLike[str], *, replace: bool = False
    ) -> ModelAdded:
        """Register the local model folder ``path`` under ``name`` (see `embedplat model add`).

        Every process that embeds resolves ``name`` to that folder (the same absolute path on
        each machine) and refuses to embed when its files there differ from the ones
        registered now. Raises :class:`~embedplat.models.ModelRegistrationError` for a
        reserved or taken name (``replace=True`` re-points a name no collection has vectors
        of), or a folder that is not a model.
        """
        with self.connection() as conn:
            return _models.add_model(conn, name, os.fspath(path), replace=replace)

    def remove_model(self, name: str) -> bool:
        """Forget the registration of ``name`` (False: there was none); refused while a
        collection uses it."""
        with self.connection() as conn:
            return _models.remove_model(conn, name)

    def switch_model(
        self,
        collection: str,
        model: str,
        *,
        keep_old: bool = False,
        reuse: bool = False,
        backend: str | None = None,
    ) -> SwitchStart:
        """Start switching ``collection`` to ``model`` with no downtime (docs/models.md).

        ``backend`` switches to that backend's variant of ``model`` (``MODEL@BACKEND``): how a
        collection moves from the torch model to its ONNX or OpenVINO variant and back.

        The model is loaded first: one that cannot be loaded is refused here
        (:class:`~embedplat.errors.ModelError`), never discovered mid-sync. Syncs and workers
        then back-fill every chunk with it while searches keep using the active model; the
        sync that finishes the back-fill builds its ANN index and swaps. ``keep_old`` keeps
        the active model's vectors after the swap, so that switching back with
        ``reuse=True`` re-embeds only the chunks whose text changed since. When nothing needs
        embedding (every vector is reused, or nothing was embedded yet) the swap happens now:
        the result's ``state`` is then ``switched``.
        """
        model = variant_name(model, backend)
        with self.connection() as conn:
            _collections.get_collection(conn, collection)
            _models.require_model(conn, model)
        embedder = self.embedder(model)
        with self.connection() as conn:
            started = _switch.start_switch(
                conn, collection, embedder, keep_old=keep_old, reuse=reuse
            )
            info = _collections.get_collection(conn, collection)
        nothing_queued = started.state == "started" and started.chunks_queued == 0
        if nothing_queued and _switch.complete_switch(self.new_connection, info) == "switched":
            started = dataclasses.replace(started, state="switched")
        return started

    def cancel_switch(self, collection: str) -> SwitchCancel:
        """Abandon ``collection``'s model switch: its queued back-fill and its vectors are
        deleted; the active model stays."""
        return _switch.cancel_switch(self.new_connection, collection)

    def switches(self, collection: str | None = None) -> list[SwitchProgress]:
        """The model switches in progress (chunks done of all, rate, ETA)."""
        with self.connection() as conn:
            return _switch.switch_progress(conn, collection)

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
            model = self.new_collection_model(DEFAULT_MODEL, None)
            if model != DEFAULT_MODEL:
                _models.require_model(conn, model)
            return _collections.create_collection(conn, name, model=model, exist_ok=True)

    def new_collection_model(self, model: str, backend: str | None) -> str:
        """The model name a new collection gets for ``model`` and ``backend``: the variant of
        ``backend``, else of the settings' backend (``EMBEDPLAT_BACKEND``), else of the model's
        measured default (``backends.default_backend_of``: openvino-int8 for all-MiniLM-L6-v2),
        unless ``model`` names a backend itself (``all-MiniLM-L6-v2@onnx``)."""
        if not model.strip():
            return model
        if backend is None and model_variant(model).base == model:
            backend = self.settings.backend or default_backend_of(model)
        return variant_name(model, backend)

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
        """Find and repair drift the fast path cannot see (see :func:`embedplat.sync.reconcile`).

        Attached collections are first re-derived from their app tables (records missing,
        extra or different, e.g. after the triggers were disabled by hand), in short
        transactions, then reconciled like any other.
        """
        with self.connection() as conn:
            cid = _collections.get_collection(conn, collection).id if collection else None
            attached = [
                a.collection
                for a in _attach.list_attachments(conn)
                if collection is None or a.collection == collection
            ]
        repaired = [self.reconcile_attachment(name) for name in attached]
        with self.connection() as conn:
            report = reconcile(conn, cid)
        for done in repaired:
            report.attached_records_inserted += done.records_inserted
            report.attached_records_updated += done.records_updated
            report.attached_records_deleted += done.records_deleted
        return report

    # -- attached tables ----------------------------------------------------------------------

    def attach(
        self,
        collection: str,
        table: str,
        *,
        text_columns: Sequence[str] | str | None,
        id_columns: Sequence[str] | str | None = None,
        metadata_columns: Sequence[str] | str | None = None,
        filter_column: str | None = None,
        model: str = DEFAULT_MODEL,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        refresh: bool = False,
        inline_rows: int | None = None,
        backfill: bool = True,
        batch_size: int = _attach.DEFAULT_BACKFILL_BATCH,
        progress: Callable[[AttachReport], None] | None = None,
        backend: str | None = None,
    ) -> AttachReport:
        """Make the app table ``table`` the source of ``collection`` (docs/attach.md).

        Triggers keep the records in step in the app's own transactions; the rows already
        there are back-filled in short transactions (``backfill=False``: later, with
        :meth:`reconcile_attachment`). ``id_columns`` default to the primary key; with
        ``refresh=True`` an attached collection is re-attached and re-derived. A statement
        writing more than ``inline_rows`` rows (default 1,000) queues their keys for the next
        sync instead of writing records in its own transaction. ``progress``
        receives the back-fill's running report after each batch. A new collection's
        ``model`` must resolve (as in :meth:`create_collection`, ``backend`` too).
        """
        return _attach.attach_table(
            self.new_connection,
            collection,
            table,
            text_columns=text_columns,
            id_columns=id_columns,
            metadata_columns=metadata_columns,
            filter_column=filter_column,
            model=self.new_collection_model(model, backend),
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            refresh=refresh,
            inline_rows=inline_rows,
            run_backfill=backfill,
            batch_size=batch_size,
            progress=progress,
        )

    def detach(self, collection: str, *, drop_records: bool = False) -> None:
        """Stop following ``collection``'s table; its records stay unless ``drop_records``."""
        with self.connection() as conn:
            _attach.detach_table(conn, collection, drop_records=drop_records)

    def attachments(self) -> list[Attachment]:
        """Every attached table with its health (``embedplat.attachment_status``)."""
        with self.connection() as conn:
            return _attach.list_attachments(conn)

    def reconcile_attachment(
        self, collection: str, *, batch_size: int = _attach.DEFAULT_BACKFILL_BATCH
    ) -> AttachReport:
        """Re-derive an attached collection's records from its table (missing, extra and
        different ones), in short transactions; also finishes an interrupted back-fill."""
        return _attach.reconcile_attachment(self.new_connection, collection, batch_size=batch_size)

    # -- search -----------------------------------------------------------------------------

    def search(
        self,
        collection: str,
        query: str | Sequence[float] | np.ndarray,
        k: int = DEFAULT_K,
        filter: Mapping[str, Any] | None = None,
        **options: Unpack[SearchKwargs],
    ) -> list[SearchHit]:
        """The ``k`` records nearest to ``query`` (a text, or a vector of the collection's model).

        ``filter`` follows the filter language (docs/filters.md). The keyword ``options`` are
        the fields of :class:`~embedplat.search.SearchOptions`: ``hybrid=True`` (text queries
        only) fuses full-text and vector ranks (:class:`HybridHit` results, see
        ``embedplat.hybrid_search``); ``min_similarity`` and ``per_record`` apply to vector
        search, ``vector_weight`` / ``text_weight`` / ``rrf_k`` to hybrid search;
        ``ef_search`` / ``probes`` set the index's query-time knobs for this call only.
        """
        opts = SearchOptions(k=k, filter=filter, **options)
        if isinstance(query, str):
            return self.search_with(collection, [query], opts)[0]
        if opts.hybrid:
            raise InvalidInputError("hybrid search needs a query text (it searches words too)")
        with self.connection() as conn:
            return search_vector(conn, collection, query, opts)

    def search_many(
        self,
        collection: str,
        queries: Sequence[str],
        k: int = DEFAULT_K,
        filter: Mapping[str, Any] | None = None,
        **options: Unpack[SearchKwargs],
    ) -> list[list[SearchHit]]:
        """Search several query texts, embedding them in one model call (options as in search)."""
        return self.search_with(collection, queries, SearchOptions(k=k, filter=filter, **options))

    def search_with(
        self, collection: str, queries: Sequence[str], options: SearchOptions
    ) -> list[list[SearchHit]]:
        """Search several query texts with one :class:`~embedplat.search.SearchOptions`.

        The texts are embedded with the collection's model and every search names that model,
        so the database never compares them with another model's vectors; should a model
        switch swap the collection's model between the two, they are embedded again with the
        new one (see :meth:`_embed_queries`).
        """
        for text in queries:
            check_query_text(text)

        def run(conn: Connection, embedder: Embedder, vectors: np.ndarray) -> list[list[SearchHit]]:
            model, fingerprint = embedder.name, embedder.fingerprint
            results: list[list[SearchHit]] = []
            for text, vector in zip(queries, vectors, strict=True):
                hits: list[SearchHit]
                if options.hybrid:
                    hits = list(
                        hybrid_search_vector(
                            conn,
                            collection,
                            text,
                            vector,
                            options,
                            query_model=model,
                            query_fingerprint=fingerprint,
                        )
                    )
                else:
                    hits = search_vector(
                        conn,
                        collection,
                        vector,
                        options,
                        query_model=model,
                        query_fingerprint=fingerprint,
                    )
                results.append(hits)
            return results

        return self._embed_queries(collection, queries, run)

    def hybrid_search(
        self,
        collection: str,
        query: str,
        k: int = DEFAULT_K,
        filter: Mapping[str, Any] | None = None,
        **options: Unpack[SearchKwargs],
    ) -> list[HybridHit]:
        """Full-text and vector search fused by reciprocal rank fusion (typed :class:`HybridHit`).

        Options as in :meth:`search` (``vector_weight``, ``text_weight``, ``rrf_k``,
        ``ef_search``, ``probes`` apply); the query's model is checked as in
        :meth:`search_with`.
        """
        options["hybrid"] = True
        opts = SearchOptions(k=k, filter=filter, **options)

        def run(conn: Connection, embedder: Embedder, vectors: np.ndarray) -> list[HybridHit]:
            return hybrid_search_vector(
                conn,
                collection,
                query,
                vectors[0],
                opts,
                query_model=embedder.name,
                query_fingerprint=embedder.fingerprint,
            )

        return self._embed_queries(collection, [query], run)

    def embed_query(self, collection: str, text: str) -> np.ndarray:
        """``text``'s vector by ``collection``'s own model, its exact backend variant: the
        vector to compose with SQL (``embedplat.search(collection, vector, k)``, the ORM's
        ``search_fn``). Plain SQL takes any vector of the right length, so a vector of another
        model (``platform.embedder("all-MiniLM-L6-v2")`` for a collection on
        ``all-MiniLM-L6-v2@openvino-int8``) would be compared with the wrong model's vectors."""
        with self.connection() as conn:
            model_name = _collections.get_collection(conn, collection).model_name
        vector: np.ndarray = self.embedder(model_name).embed([text])[0]
        return vector

    def _embed_queries(
        self,
        collection: str,
        queries: Sequence[str],
        run: Callable[[Connection, Embedder, np.ndarray], T],
    ) -> T:
        """Embed query texts with ``collection``'s model, then ``run(conn, embedder, vectors)``
        the searches, which name ``embedder``'s model to the database.

        The database refuses a query of another model than the collection's active one
        (:class:`ModelMismatchError`). When that is because a model switch swapped the
        collection's model after the texts were embedded, they are embedded with the new model
        and run once more; a second refusal is raised. So is the first when the collection
        still names the model used (its vectors come from other files of that model than this
        process loads): embedding again would give the same vectors.
        """
        with self.connection() as conn:
            model_name = _collections.get_collection(conn, collection).model_name
        embedder = self.embedder(model_name)
        retried = False
        while True:
            vectors = embedder.embed(list(queries))
            try:
                with self.connection() as conn:
                    return run(conn, embedder, vectors)
            except ModelMismatchError:
                if retried:
                    raise
                with self.connection() as conn:
                    model_name = _collections.get_collection(conn, collection).model_name
                current = self.embedder(model_name)
                if (current.name, current.fingerprint) == (embedder.name, embedder.fingerprint):
                    raise
                embedder, retried = current, True

    def similar(
        self,
        collection: str,
        external_id: str,
        k: int = DEFAULT_K,
        filter: Mapping[str, Any] | None = None,
        *,
        ef_search: int | None = None,
        probes: int | None = None,
    ) -> list[SearchHit]:
        """More like this: the ``k`` records nearest to record ``external_id`` (not itself)."""
        opts = SearchOptions(k=k, filter=filter, ef_search=ef_search, probes=probes)
        with self.connection() as conn:
            return similar_records(conn, collection, external_id, opts)

    # -- index ------------------------------------------------------------------------------

    def build_index(
        self,
        collection: str,
        *,
        method: str = "hnsw",
        m: int | None = None,
        ef_construction: int | None = None,
        lists: int | None = None,
        ef_search: int | None = None,
        probes: int | None = None,
    ) -> IndexReport:
        """(Re)build the collection's ANN index with CREATE INDEX CONCURRENTLY (see `embedplat index`).

        Searches keep working during a rebuild: the new index is built under a temporary name,
        then swapped in. The options are stored in ``collections.index_options``.
        """
        return _build_index(
            self.new_connection,
            collection,
            method=method,
            m=m,
            ef_construction=ef_construction,
            lists=lists,
            ef_search=ef_search,
            probes=probes,
        )

    # -- duplicates, anomalies, export --------------------------------------------------------

    def near_duplicates(
        self,
        collection: str,
        *,
        threshold: float = _analytics.DEFAULT_DUPLICATE_THRESHOLD,
        k: int = _analytics.DEFAULT_DUPLICATE_K,
    ) -> list[DuplicatePair]:
        """Pairs of records (external ids, ``a < b``) with similarity >= ``threshold``.

        See ``embedplat.near_duplicates`` in docs/sql.md: one k-NN probe per chunk through the
        HNSW index; identical content (same content hash) is reported with similarity 1. The
        default threshold is calibrated for all-MiniLM-L6-v2.
        """
        with self.connection() as conn:
            return _analytics.near_duplicates(conn, collection, threshold=threshold, k=k)

    def duplicate_groups(
        self,
        collection: str,
        *,
        threshold: float = _analytics.DEFAULT_DUPLICATE_THRESHOLD,
        k: int = _analytics.DEFAULT_DUPLICATE_K,
    ) -> list[DuplicateGroupMember]:
        """Connected groups of near-duplicates; one keeper per group (the oldest record)."""
        with self.connection() as conn:
            return _analytics.duplicate_groups(conn, collection, threshold=threshold, k=k)

    def anomaly_scores(
        self,
        collection: str,
        *,
        k: int = _analytics.DEFAULT_ANOMALY_K,
        reference: str | None = None,
        top: int | None = None,
    ) -> list[AnomalyScore]:
        """Anomaly score per record, most anomalous first (``top``: only the first ``top``).

        Without ``reference``: outliers within the collection; with ``reference``: novelty
        against that collection (same model required).
        """
        with self.connection() as conn:
            return _analytics.anomaly_scores(conn, collection, k=k, reference=reference, top=top)

    def export(
        self,
        collection: str,
        output: str | os.PathLike[str] | IO[str],
        *,
        chunks: bool = False,
        vectors: bool = False,
        format: _export.ExportFormat = "jsonl",
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write ``collection``'s records (or chunks) to ``output``; returns the row count.

        ``output`` is a path, or a text stream for JSON Lines; Parquet needs a path and
        pyarrow (``pip install 'embedplat[export]'``). Rows stream from a server-side cursor.
        """
        target: Path | IO[str] = Path(output) if isinstance(output, str | os.PathLike) else output
        with self.connection() as conn:
            return _export.export_collection(
                conn,
                collection,
                target,
                chunks=chunks,
                vectors=vectors,
                format=format,
                progress=progress,
            )

    def export_count(self, collection: str, *, chunks: bool = False) -> int:
        """How many rows :meth:`export` would write (for progress bars)."""
        with self.connection() as conn:
            return _export.count_rows(conn, collection, chunks=chunks)

    # -- status -----------------------------------------------------------------------------

    def status(self) -> list[CollectionStatus]:
        """Per-collection counts: records, chunks, embedded, stale, failed, queue lag."""
        with self.connection() as conn:
            return collection_status(conn)
