"""Application tables as sources: attach, back-fill, drain, reconcile, detach
(sql/attach.v1.sql, sql/attach.v2.sql).

An attached table is the source of truth of its collection: triggers on the table write
``embedplat.records`` in the app's own transaction (a statement writing more than the
attachment's ``inline_rows`` rows queues their keys instead, and :func:`drain`, run by every
sync, derives them), and the sync engine embeds what changed, as for ingested records. This
module is the Python side of the SQL functions:

* :func:`attach_table` runs ``embedplat.attach()`` (validation, the collection, the triggers)
  in one short transaction, then back-fills the rows already there;
* :func:`backfill` calls ``embedplat.attach_backfill()`` in a loop, **one transaction per
  batch** with a short ``lock_timeout``: a batch that would wait on the app's locks gives up
  and is retried, so app writers never wait longer than that and never deadlock with it;
* :func:`drain` calls ``embedplat.attach_drain()`` the same way, for the keys bulk statements
  queued;
* :func:`reconcile_attachment` re-derives every record from the table the same way (missing,
  extra and different records), e.g. after its triggers were disabled by hand;
* :func:`detach_table`, :func:`list_attachments`, :func:`refuse_ingest_if_attached`.

``Platform.attach`` / ``detach`` / ``attachments`` / ``reconcile_attachment`` call these.

How a row becomes a record, and how to join search results back to the app's rows, is in
docs/attach.md; :func:`external_id_of` builds the join key in SQLAlchemy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from embedplat.collections import validate_chunking, validate_collection_name
from embedplat.config import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL
from embedplat.errors import CollectionNotFoundError, InvalidInputError, server_errors
from embedplat.models import require_model

if TYPE_CHECKING:  # SQLAlchemy is imported by external_id_of only: the CLI never needs it
    from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "DEFAULT_BACKFILL_BATCH",
    "DEFAULT_INLINE_ROWS",
    "AttachReport",
    "Attachment",
    "attach_table",
    "backfill",
    "detach_table",
    "drain",
    "external_id_of",
    "get_attachment",
    "list_attachments",
    "reconcile_attachment",
    "refuse_ingest_if_attached",
]

Connection = psycopg.Connection[Any]
ConnectionFactory = Callable[[], Connection]

# Source rows per back-fill transaction; embedplat.attach_backfill's SQL default is the same
# number (a test checks). Small enough that a batch holds its row locks for milliseconds.
DEFAULT_BACKFILL_BATCH = 1000
# Rows a statement may write to an attached table and still have its records written in its
# own transaction; embedplat.attach's default for a new attachment is the same (a test checks).
DEFAULT_INLINE_ROWS = 1000
# A back-fill batch waits at most this long for a lock (on an app row being written, or a
# record being chunked) before it gives up and is retried: below deadlock_timeout (1 s by
# default), so in a lock cycle with an app transaction the batch always gives way first.
BACKFILL_LOCK_TIMEOUT_MS = 100
# attach/detach take a short exclusive-ish lock on the app table to create or drop triggers;
# waiting longer would queue every app writer behind them.
DDL_LOCK_TIMEOUT_MS = 5000
# Consecutive lock timeouts before a back-fill gives up with an error.
MAX_BACKFILL_RETRIES = 200

_STATUS_SELECT = """
SELECT collection, source, source_exists, id_columns, text_columns, metadata_columns,
       filter_column, missing_columns, triggers_enabled, healthy, last_error, error_since,
       backfill_phase, backfilled_at, source_rows_estimate, records, state, created_at,
       inline_rows, pending_rows
FROM embedplat.attachment_status
"""


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attached table and its health (a row of ``embedplat.attachment_status``).

    ``state`` is ``ok``, ``backfilling``, ``error`` (a trigger failed: ``last_error``),
    ``triggers_missing`` (dropped or disabled), ``columns_missing`` (dropped or renamed: attach
    again with ``refresh=True``) or ``source_dropped``. ``pending_rows`` keys, queued by
    statements that wrote more than ``inline_rows`` rows, wait for the next sync's drain.
    """

    collection: str
    source: str
    source_exists: bool
    id_columns: tuple[str, ...]
    text_columns: tuple[str, ...]
    metadata_columns: tuple[str, ...]
    filter_column: str | None
    missing_columns: tuple[str, ...]
    triggers_enabled: int
    healthy: bool
    last_error: str | None
    error_since: datetime | None
    backfill_phase: str
    backfilled_at: datetime | None
    source_rows_estimate: int | None
    records: int
    state: str
    created_at: datetime
    inline_rows: int
    pending_rows: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Attachment:
        """From a dict row of ``embedplat.attachment_status``."""
        values = dict(row)
        for key in ("id_columns", "text_columns", "metadata_columns", "missing_columns"):
            values[key] = tuple(values[key] or ())
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape the CLI will print)."""
        return {
            "collection": self.collection,
            "source": self.source,
            "source_exists": self.source_exists,
            "id_columns": list(self.id_columns),
            "text_columns": list(self.text_columns),
            "metadata_columns": list(self.metadata_columns),
            "filter_column": self.filter_column,
            "missing_columns": list(self.missing_columns),
            "triggers_enabled": self.triggers_enabled,
            "healthy": self.healthy,
            "last_error": self.last_error,
            "error_since": self.error_since.isoformat() if self.error_since else None,
            "backfill_phase": self.backfill_phase,
            "backfilled_at": self.backfilled_at.isoformat() if self.backfilled_at else None,
            "source_rows_estimate": self.source_rows_estimate,
            "records": self.records,
            "state": self.state,
            "created_at": self.created_at.isoformat(),
            "inline_rows": self.inline_rows,
            "pending_rows": self.pending_rows,
        }


@dataclass(frozen=True, slots=True)
class AttachReport:
    """What an attach, back-fill or reconcile did: source rows read, records written and
    deleted, records checked against the source (the pass that finds records whose row is
    gone), transactions (``batches``) and batches retried after a lock timeout."""

    collection: str
    rows_read: int = 0
    records_inserted: int = 0
    records_updated: int = 0
    records_deleted: int = 0
    records_checked: int = 0
    batches: int = 0
    retries: int = 0
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "collection": self.collection,
            "rows_read": self.rows_read,
            "records_inserted": self.records_inserted,
            "records_updated": self.records_updated,
            "records_deleted": self.records_deleted,
            "records_checked": self.records_checked,
            "batches": self.batches,
            "retries": self.retries,
            "done": self.done,
        }


def _names(values: Sequence[str] | str | None, what: str) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):  # a lone string would be read as one column per letter
        values = [values]
    names = list(values)
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"{what} must be column names, got {name!r}")
    return names


def attach_table(
    connect: ConnectionFactory,
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
    run_backfill: bool = True,
    batch_size: int = DEFAULT_BACKFILL_BATCH,
    progress: Callable[[AttachReport], None] | None = None,
) -> AttachReport:
    """Attach ``table`` (a name as SQL resolves it, e.g. ``"public.articles"``) to
    ``collection``, creating the collection with ``model`` and chunking if it is missing.

    ``id_columns`` default to the table's primary key. With ``refresh=True`` an existing
    attachment is re-attached (arguments left as None keep their stored values; pass
    ``filter_column=""`` to remove a filter) and every record is re-derived. ``inline_rows``
    (default :data:`DEFAULT_INLINE_ROWS` for a new attachment, the stored value on a refresh):
    a statement writing more rows than this queues their keys for the next sync instead of
    writing records in its own transaction (deletes are never queued). The triggers are
    installed in one short transaction; then (``run_backfill``) the rows already in the table
    are back-filled in batches (:func:`backfill`).
    """
    validate_collection_name(collection)
    validate_chunking(chunk_tokens, chunk_overlap)
    if not isinstance(table, str) or not table.strip():
        raise InvalidInputError("name the table to attach, e.g. 'public.articles'")
    texts = _names(text_columns, "text_columns")
    if not refresh and not texts:
        raise InvalidInputError("name at least one text column (text_columns)")
    if inline_rows is not None and (
        isinstance(inline_rows, bool) or not isinstance(inline_rows, int) or inline_rows < 0
    ):
        raise InvalidInputError(f"inline_rows must be a whole number >= 0, got {inline_rows!r}")
    conn = connect()
    conn.autocommit = True
    try:
        exists = conn.execute(
            "SELECT 1 FROM embedplat.collections WHERE name = %s", (collection,)
        ).fetchone()
        if exists is None:
            # The collection is created with ``model``: refuse one that cannot load now, not
            # at the first sync (the check resolves the name; it loads no weights).
            require_model(conn, model)
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = {DDL_LOCK_TIMEOUT_MS}")
            with _attach_errors(table):
                conn.execute(
                    "SELECT embedplat.attach(%s, %s::regclass, id_columns => %s, "
                    "text_columns => %s, metadata_columns => %s, filter_column => %s, "
                    "model => %s, chunk_tokens => %s, chunk_overlap => %s, refresh => %s, "
                    "inline_rows => %s)",
                    (
                        collection,
                        table,
                        _names(id_columns, "id_columns"),
                        texts,
                        _names(metadata_columns, "metadata_columns"),
                        filter_column,
                        model,
                        chunk_tokens,
                        chunk_overlap,
                        refresh,
                        inline_rows,
                    ),
                )
    finally:
        conn.close()
    if not run_backfill:
        return AttachReport(collection, batches=1)
    report = backfill(connect, collection, batch_size=batch_size, progress=progress)
    return replace(report, batches=report.batches + 1)


def backfill(
    connect: ConnectionFactory,
    collection: str,
    *,
    batch_size: int = DEFAULT_BACKFILL_BATCH,
    restart: bool = False,
    progress: Callable[[AttachReport], None] | None = None,
) -> AttachReport:
    """Run ``collection``'s back-fill to the end, one transaction per batch.

    Resumes where an interrupted back-fill stopped (the position is stored with the
    attachment); ``restart=True`` starts over (a reconcile). A batch that cannot get a lock
    within ``BACKFILL_LOCK_TIMEOUT_MS`` is rolled back and retried after a short pause.
    """
    return _batches(
        connect,
        collection,
        "SELECT * FROM embedplat.attach_backfill(%s, %s, restart => %s)",
        lambda first: (collection, batch_size, restart and first),
        batch_size,
        progress,
        "back-fill",
    )


def drain(
    connect: ConnectionFactory,
    collection: str,
    *,
    batch_size: int = DEFAULT_BACKFILL_BATCH,
    progress: Callable[[AttachReport], None] | None = None,
) -> AttachReport:
    """Derive the records of every key that bulk statements queued for ``collection`` (more
    rows than its ``inline_rows``), one transaction per batch of about ``batch_size`` keys,
    with the back-fill's lock timeout and retries. ``rows_read`` counts the keys drained.
    Keys queued while it runs are drained too; other drains running at once take other keys."""
    return _batches(
        connect,
        collection,
        "SELECT keys_read AS rows_read, records_inserted, records_updated, records_deleted, "
        "0 AS records_checked, done FROM embedplat.attach_drain(%s, %s)",
        lambda first: (collection, batch_size),
        batch_size,
        progress,
        "drain",
    )


def _batches(
    connect: ConnectionFactory,
    collection: str,
    query: str,
    params: Callable[[bool], tuple[Any, ...]],
    batch_size: int,
    progress: Callable[[AttachReport], None] | None,
    what: str,
) -> AttachReport:
    """Run ``query`` (one batch, returning an attach_backfill-shaped row) in its own short
    transaction until a row says done; ``params(first)`` gives its parameters."""
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
    report = AttachReport(collection)
    conn = connect()
    conn.autocommit = True
    failures = 0
    first = True
    try:
        while True:
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = {BACKFILL_LOCK_TIMEOUT_MS}")
                    with server_errors(), conn.cursor(row_factory=dict_row) as cur:
                        row = cur.execute(query, params(first)).fetchone()
            except (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected):
                failures += 1
                report = replace(report, retries=report.retries + 1)
                if failures > MAX_BACKFILL_RETRIES:
                    raise InvalidInputError(
                        f"the {what} of {collection!r} could not get its locks "
                        f"{failures} times in a row; it resumes where it stopped when run again"
                    ) from None
                time.sleep(min(0.005 * 2 ** min(failures, 7), 0.5))
                continue
            except psycopg.errors.UndefinedTable as exc:
                raise InvalidInputError(str(exc.diag.message_primary or exc)) from None
            except psycopg.errors.UndefinedColumn as exc:
                hint = exc.diag.message_hint
                raise InvalidInputError(
                    f"{exc.diag.message_primary or exc}" + (f" ({hint})" if hint else "")
                ) from None
            assert row is not None
            failures = 0
            first = False
            report = replace(
                report,
                rows_read=report.rows_read + int(row["rows_read"]),
                records_inserted=report.records_inserted + int(row["records_inserted"]),
                records_updated=report.records_updated + int(row["records_updated"]),
                records_deleted=report.records_deleted + int(row["records_deleted"]),
                records_checked=report.records_checked + int(row["records_checked"]),
                batches=report.batches + 1,
                done=bool(row["done"]),
            )
            if progress is not None:
                progress(report)
            if report.done:
                return report
    finally:
        conn.close()


def reconcile_attachment(
    connect: ConnectionFactory, collection: str, *, batch_size: int = DEFAULT_BACKFILL_BATCH
) -> AttachReport:
    """Re-derive every record of an attached collection from its table, in short
    transactions: missing records are inserted, different ones updated, extra ones deleted.
    A complete pass also clears the attachment's error if nothing failed since it started."""
    return backfill(connect, collection, batch_size=batch_size, restart=True)


def detach_table(conn: Connection, collection: str, *, drop_records: bool = False) -> None:
    """Drop ``collection``'s triggers from its table, in the caller's transaction; the records
    stay (searchable, no longer updated) unless ``drop_records``. The collection stays."""
    conn.execute(f"SET LOCAL lock_timeout = {DDL_LOCK_TIMEOUT_MS}")
    with _attach_errors(None):
        conn.execute("SELECT embedplat.detach(%s, drop_records => %s)", (collection, drop_records))


def list_attachments(conn: Connection) -> list[Attachment]:
    """Every attachment with its health, by collection name."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_STATUS_SELECT + "ORDER BY collection").fetchall()
    return [Attachment.from_row(row) for row in rows]


def get_attachment(conn: Connection, collection: str) -> Attachment | None:
    """``collection``'s attachment, or None when it is not attached."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_STATUS_SELECT + "WHERE collection = %s", (collection,)).fetchone()
    return None if row is None else Attachment.from_row(row)


def refuse_ingest_if_attached(conn: Connection, collection_id: int) -> None:
    """Raise :class:`InvalidInputError` when the collection is attached to a table: its
    records come from the table (the triggers would not know of ingested ones, and the next
    reconcile would delete them)."""
    row = conn.execute(
        "SELECT collection, source FROM embedplat.attachment_status WHERE collection_id = %s",
        (collection_id,),
    ).fetchone()
    if row is not None:
        raise InvalidInputError(
            f"collection {row[0]!r} is attached to table {row[1]}: its records come from that "
            "table, so write the table instead (or detach the collection first); "
            "nothing was ingested"
        )


def external_id_of(*key_columns: ColumnElement[Any] | Any) -> ColumnElement[str]:
    """The external id an attached row gets, as a SQLAlchemy expression over the app's own key
    columns (in ``id_columns`` order), to join search results back::

        hits = search_fn("articles", vector, 10)
        select(Article, hits.c.similarity).join(hits, hits.c.id == external_id_of(Article.id))

    One column: its text; several: ``embedplat.attach_external_id`` of their texts. (For a
    one-column integer key, ``Article.id == cast(hits.c.id, Integer)`` lets the planner use
    the app table's primary key index instead.)
    """
    from sqlalchemy import Text, cast, func

    if not key_columns:
        raise ValueError("external_id_of needs the key columns")
    texts = [cast(c, Text) for c in key_columns]
    if len(texts) == 1:
        return texts[0]
    result: ColumnElement[str] = func.embedplat.attach_external_id(*texts, type_=Text)
    return result


@contextmanager
def _attach_errors(table: str | None) -> Iterator[None]:
    """Server errors of attach/detach as embedplat errors with the server's message."""
    try:
        yield
    except psycopg.Error as exc:
        diag = exc.diag
        message = str(diag.message_primary or exc)
        if diag.message_hint:
            message += f" ({diag.message_hint})"
        if isinstance(exc, pg_errors.UndefinedTable) and table is not None:
            raise InvalidInputError(f"no table named {table!r}: {message}") from None
        if isinstance(exc, pg_errors.UndefinedObject):
            raise CollectionNotFoundError(message) from None
        if isinstance(exc, pg_errors.LockNotAvailable):
            raise InvalidInputError(
                f"the table is busy (its lock was not granted within {DDL_LOCK_TIMEOUT_MS} ms): "
                "try again when its long transactions are over"
            ) from None
        if isinstance(exc, _INPUT_ERRORS):
            raise InvalidInputError(message) from None
        raise


_INPUT_ERRORS = (
    pg_errors.InvalidParameterValue,
    pg_errors.UndefinedColumn,
    pg_errors.NullValueNotAllowed,
    pg_errors.InsufficientPrivilege,
    pg_errors.InvalidTextRepresentation,
    pg_errors.InvalidName,
    pg_errors.CheckViolation,
)
