"""`embedplat attach | detach | attachments`: application tables as sources (docs/attach.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from embedplat.cli.app import app, handle_errors, open_platform
from embedplat.cli.options import BackendOption, CollectionArg, JsonFlag, storable_text
from embedplat.cli.output import print_json, shown
from embedplat.config import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL

if TYPE_CHECKING:
    from embedplat.attach import Attachment, AttachReport

# The back-fill's default batch and inline_rows, spelled here as well so `--help` stays fast
# (no psycopg import); a test checks they equal embedplat.attach's.
DEFAULT_BACKFILL_BATCH = 1000
DEFAULT_INLINE_ROWS = 1000


def _columns(values: list[str] | None) -> list[str] | None:
    """Repeated column options; None when none was given (the library's default applies)."""
    if not values:
        return None
    for value in values:
        storable_text(value)
    return values


@app.command()
@handle_errors()
def attach(
    collection: CollectionArg,
    table: Annotated[
        str,
        typer.Argument(
            metavar="TABLE",
            help="The app's table, as SQL names it (public.articles).",
            callback=storable_text,
        ),
    ],
    text: Annotated[
        list[str] | None,
        typer.Option(
            "--text",
            metavar="COL",
            help="Text column(s); repeat to join several with a blank line, as ingest "
            "--text-field does. Needed unless --refresh keeps the stored ones.",
        ),
    ] = None,
    id_column: Annotated[
        list[str] | None,
        typer.Option(
            "--id",
            metavar="COL",
            help="Id column(s) (default: the primary key); repeat for a composite key.",
        ),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata", metavar="COL", help="Column(s) to keep as the record's metadata; repeat."
        ),
    ] = None,
    filter_column: Annotated[
        str | None,
        typer.Option(
            "--filter",
            metavar="COL",
            help="A boolean column: only rows where it is true get a record "
            "(with --refresh, '' removes the stored filter).",
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="Embedding model of a collection this creates.")
    ] = DEFAULT_MODEL,
    chunk_tokens: Annotated[
        int, typer.Option(help="Target tokens per chunk of a collection this creates.")
    ] = DEFAULT_CHUNK_TOKENS,
    chunk_overlap: Annotated[
        int, typer.Option(help="Tokens shared by neighbouring chunks of a long paragraph.")
    ] = DEFAULT_CHUNK_OVERLAP,
    backend: BackendOption = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="Re-attach an attached collection (after a schema change): options left out "
            "keep their stored values; every record is re-derived from the table.",
        ),
    ] = False,
    inline_rows: Annotated[
        int | None,
        typer.Option(
            "--inline-rows",
            min=0,
            help="Statements writing more table rows than this queue their keys for the next "
            f"sync instead of writing records in their own transaction (default "
            f"{DEFAULT_INLINE_ROWS:,} for a new attachment; --refresh keeps the stored value).",
        ),
    ] = None,
    no_backfill: Annotated[
        bool,
        typer.Option(
            "--no-backfill",
            help="Only install the triggers; the rows already there get records with "
            "`sync --reconcile` later.",
        ),
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Table rows per back-fill transaction.")
    ] = DEFAULT_BACKFILL_BATCH,
    json_out: JsonFlag = False,
) -> None:
    """Make the app table TABLE the source of COLLECTION: triggers keep its records in step.

    COLLECTION is created (with --model, --chunk-tokens, --chunk-overlap) if it does not exist.
    The rows already in TABLE are back-filled in short transactions; `sync` then embeds them.
    Everything is checked before anything changes: an unknown column stores nothing.
    """
    from embedplat.attach import get_attachment

    with (
        open_platform() as platform,
        _backfill_progress(collection, enabled=not json_out and sys.stderr.isatty()) as progress,
    ):
        report = platform.attach(
            collection,
            table,
            text_columns=_columns(text),
            id_columns=_columns(id_column),
            metadata_columns=_columns(metadata),
            filter_column=storable_text(filter_column),
            model=model,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            refresh=refresh,
            inline_rows=inline_rows,
            backfill=not no_backfill,
            batch_size=batch_size,
            progress=progress,
            backend=backend.value if backend is not None else None,
        )
        with platform.connection() as conn:
            attached = get_attachment(conn, collection)
    if json_out:
        print_json(report.to_json())
        return
    source = shown(attached.source) if attached is not None else shown(table)
    typer.echo(attach_line(report, source, backfilled=not no_backfill))


def attach_line(report: AttachReport, source: str, *, backfilled: bool) -> str:
    """``attached 'articles' to public.articles: 3 rows read, 3 records inserted, ...``."""
    head = f"attached {report.collection!r} to {source}"
    if not backfilled:
        return f"{head}; rows already there get records with `embedplat sync --reconcile`"
    return (
        f"{head}: {report.rows_read:,} rows read, {report.records_inserted:,} records inserted, "
        f"{report.records_updated:,} updated, {report.records_deleted:,} deleted "
        f"({report.batches} transactions, {report.retries} retried)"
    )


@contextmanager
def _backfill_progress(
    collection: str, *, enabled: bool
) -> Iterator[Callable[[AttachReport], None] | None]:
    """A rich progress line on stderr (terminals only) with the back-fill's running counts."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        # Descriptions and fields hold a collection name: never markup.
        TextColumn("{task.description}", markup=False),
        TextColumn("{task.fields[counts]}", markup=False),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(f"back-filling {shown(collection)}", total=None, counts="")

        def advance(report: AttachReport) -> None:
            bar.update(
                task,
                counts=f"{report.rows_read:,} rows read, "
                f"{report.records_checked:,} records checked",
            )

        yield advance


@app.command()
@handle_errors()
def detach(
    collection: CollectionArg,
    drop_records: Annotated[
        bool,
        typer.Option(
            "--drop-records", help="Delete the records, chunks and vectors too (default: keep)."
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Stop following COLLECTION's app table: drop its triggers (the table is not changed).

    The records stay searchable, no longer updated, unless --drop-records. The collection
    itself stays (`collection drop` deletes it).
    """
    from embedplat.attach import get_attachment

    with open_platform() as platform:
        with platform.connection() as conn:
            # Read first, for the summary: once detached, the table is no longer recorded.
            before = get_attachment(conn, collection)
        platform.detach(collection, drop_records=drop_records)
    source = before.source if before is not None else None
    records = 0 if drop_records or before is None else before.records
    if json_out:
        print_json(
            {
                "collection": collection,
                "source": source,
                "drop_records": drop_records,
                "records": records,
            }
        )
        return
    what = (
        "its records, chunks and vectors deleted" if drop_records else f"{records:,} records kept"
    )
    typer.echo(f"detached {collection!r} from {shown(source)} ({what})")


@app.command()
@handle_errors()
def attachments(json_out: JsonFlag = False) -> None:
    """List attached app tables with their health (embedplat.attachment_status)."""
    with open_platform() as platform:
        found = platform.attachments()
    if json_out:
        print_json({"attachments": [a.to_json() for a in found]})
        return
    if not found:
        typer.echo(
            "no attached tables; attach one with `embedplat attach COLLECTION TABLE --text COL`"
        )
    for item in found:
        typer.echo(attachment_line(item))


def attachment_line(item: Attachment) -> str:
    """``articles  public.articles  ok  id=id text=title,body  3 records``, plus the error."""
    columns = f"id={_joined(item.id_columns)} text={_joined(item.text_columns)}"
    if item.metadata_columns:
        columns += f" metadata={_joined(item.metadata_columns)}"
    if item.filter_column:
        columns += f" filter={shown(item.filter_column)}"
    line = (
        f"{shown(item.collection)}\t{shown(item.source)}\t{shown(item.state)}\t{columns}"
        f"\t{item.records:,} records"
    )
    if item.pending_rows:
        line += f"\t{item.pending_rows:,} rows queued for the next sync"
    if item.missing_columns:
        line += f"\tmissing: {_joined(item.missing_columns)}"
    if item.last_error:
        line += f"\terror: {shown(item.last_error)}"
    return line


def _joined(names: tuple[str, ...]) -> str:
    return ",".join(shown(n) for n in names)
