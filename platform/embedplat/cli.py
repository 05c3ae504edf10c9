"""The `embedplat` command line.

Errors print one line (``error: ...``) and exit 1; ``--debug`` shows the traceback instead.
Every listing command has ``--json`` for scripts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from embedplat.config import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_MODEL,
    Settings,
)
from embedplat.errors import EmbedplatError, IngestError

app = typer.Typer(
    name="embedplat",
    help="Keep embeddings inside PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the embedded PostgreSQL server.", no_args_is_help=True)
collection_app = typer.Typer(help="Create, list and drop collections.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(collection_app, name="collection")

_state: dict[str, Any] = {"debug": False}
T = TypeVar("T")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


class InputFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    text = "text"


class OnErrorChoice(StrEnum):
    fail = "fail"
    skip = "skip"


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except EmbedplatError as exc:
        _fail(exc)


def _fail(exc: BaseException) -> NoReturn:
    if _state["debug"]:
        raise exc
    typer.echo(f"error: {exc}", err=True)
    raise SystemExit(1)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn embedplat errors into one line on stderr and exit status 1."""
    try:
        yield
    except EmbedplatError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None


def _settings() -> Settings:
    return Settings.from_env()


def _platform() -> Any:
    from embedplat.api import Platform

    return Platform.connect(settings=_settings())


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, default=str))


def _run(fn: Callable[[], T]) -> T:
    with _errors():
        return fn()


# -- init & db --------------------------------------------------------------------------------


@app.command()
def init(json_out: JsonFlag = False) -> None:
    """Create or upgrade the embedplat schema (idempotent; safe to run concurrently)."""

    def go() -> None:
        from embedplat.db import migrate
        from embedplat.db.connection import check_database, redact, resolve_database_url

        url = resolve_database_url(_settings())
        pgvector = check_database(url)
        migrate.upgrade(url)
        revision = migrate.current_revision(url)
        if json_out:
            _print_json({"url": redact(url), "revision": revision, "pgvector": pgvector})
        else:
            typer.echo(f"schema embedplat at revision {revision} on {redact(url)}")

    _run(go)


@db_app.command("start")
def db_start() -> None:
    """Start the embedded server (no-op when it runs already)."""

    def go() -> None:
        from embedplat.db.embedded import EmbeddedServer

        settings = _settings()
        _warn_if_external(settings)
        typer.echo(EmbeddedServer(settings.home).start())

    _run(go)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server."""

    def go() -> None:
        from embedplat.db.embedded import EmbeddedServer

        stopped = EmbeddedServer(_settings().home).stop()
        typer.echo("stopped" if stopped else "not running")

    _run(go)


@db_app.command("status")
def db_status(json_out: JsonFlag = False) -> None:
    """Whether the embedded server runs, where its data lives, its URL."""

    def go() -> None:
        from embedplat.db.embedded import EmbeddedServer

        settings = _settings()
        status = EmbeddedServer(settings.home).status()
        data = {
            "running": status.running,
            "pid": status.pid,
            "port": status.port,
            "data_dir": str(status.data_dir),
            "url": status.url,
            "external_database": bool(settings.database_url),
        }
        if json_out:
            _print_json(data)
            return
        typer.echo(f"running:  {'yes' if status.running else 'no'}")
        if status.running:
            typer.echo(f"pid:      {status.pid}")
            typer.echo(f"url:      {status.url}")
        typer.echo(f"data dir: {status.data_dir}")
        _warn_if_external(settings)

    _run(go)


@db_app.command("url")
def db_url() -> None:
    """Print the database URL (starts the embedded server if needed); `psql $(embedplat db url)`."""

    def go() -> None:
        from embedplat.db.connection import libpq_url, resolve_database_url

        typer.echo(libpq_url(resolve_database_url(_settings())))

    _run(go)


def _warn_if_external(settings: Settings) -> None:
    if settings.database_url:
        typer.echo(
            "note: EMBEDPLAT_DATABASE_URL is set, so commands use that database, not this one",
            err=True,
        )


# -- collections ------------------------------------------------------------------------------


@collection_app.command("create")
def collection_create(
    name: str,
    model: Annotated[str, typer.Option(help="Embedding model name.")] = DEFAULT_MODEL,
    chunk_tokens: Annotated[
        int, typer.Option(help="Target tokens per chunk.")
    ] = DEFAULT_CHUNK_TOKENS,
    chunk_overlap: Annotated[
        int, typer.Option(help="Tokens shared by neighbouring chunks of a long paragraph.")
    ] = DEFAULT_CHUNK_OVERLAP,
    json_out: JsonFlag = False,
) -> None:
    """Create a collection."""

    def go() -> None:
        with _platform() as platform:
            info = platform.create_collection(
                name, model=model, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap
            )
        if json_out:
            _print_json(info.to_json())
        else:
            typer.echo(f"created collection {info.name!r} (model {info.model_name})")

    _run(go)


@collection_app.command("list")
def collection_list(json_out: JsonFlag = False) -> None:
    """List collections."""

    def go() -> None:
        with _platform() as platform:
            infos = platform.collections()
        if json_out:
            _print_json({"collections": [info.to_json() for info in infos]})
            return
        if not infos:
            typer.echo("no collections")
        for info in infos:
            typer.echo(
                f"{info.name}\tmodel={info.model_name}\tchunk_tokens={info.chunk_tokens}"
                f"\tchunk_overlap={info.chunk_overlap}"
            )

    _run(go)


@collection_app.command("drop")
def collection_drop(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm deleting everything in it.")] = False,
) -> None:
    """Delete a collection with its records, chunks and embeddings (needs --yes)."""

    def go() -> None:
        if not yes:
            typer.echo(
                f"error: dropping {name!r} deletes all its records and embeddings; "
                "repeat with --yes to confirm",
                err=True,
            )
            raise SystemExit(2)
        with _platform() as platform:
            platform.drop_collection(name)
        typer.echo(f"dropped collection {name!r}")

    _run(go)


# -- ingest -----------------------------------------------------------------------------------


@app.command()
def ingest(
    collection: str,
    paths: Annotated[list[str], typer.Argument(help="Files, directories, or - for stdin.")],
    input_format: Annotated[
        InputFormat | None,
        typer.Option("--format", help="Input format (default: from the file extension)."),
    ] = None,
    id_field: Annotated[str, typer.Option(help="Field holding the record id.")] = "id",
    text_field: Annotated[
        list[str] | None,
        typer.Option(help="Field(s) holding the text; repeat to join several with a blank line."),
    ] = None,
    metadata_field: Annotated[
        list[str] | None,
        typer.Option(help="Field(s) to keep as metadata (default: the `metadata` object)."),
    ] = None,
    on_error: Annotated[
        OnErrorChoice,
        typer.Option(help="fail: write nothing if any row is bad; skip: write the good rows."),
    ] = OnErrorChoice.fail,
    json_out: JsonFlag = False,
) -> None:
    """Upsert records from JSONL, CSV or text/markdown files into COLLECTION."""

    def go() -> None:
        from embedplat.ingest import read_records

        items = read_records(
            paths,
            format=input_format.value if input_format else None,
            id_field=id_field,
            text_fields=tuple(text_field or ("text",)),
            metadata_fields=tuple(metadata_field) if metadata_field else None,
        )
        with _platform() as platform, _counter("records", enabled=not json_out) as advance:
            try:
                result = platform.ingest_records(
                    collection, items, on_error=on_error.value, progress=advance
                )
            except IngestError as exc:
                if json_out:
                    _print_json(
                        {
                            "error": str(exc),
                            "problems": [
                                {"source": p.source, "line": p.line, "reason": p.reason}
                                for p in exc.problems
                            ],
                        }
                    )
                    raise SystemExit(1) from None
                raise
        if json_out:
            _print_json(result.to_json())
            return
        typer.echo(
            f"{collection}: {result.inserted} inserted, {result.updated} updated, "
            f"{result.metadata_updated} metadata-only, {result.unchanged} unchanged, "
            f"{result.rejected} rejected"
        )
        for problem in result.problems:
            typer.echo(f"  rejected {problem}", err=True)
        if result.rejected > len(result.problems):
            typer.echo(f"  ... and {result.rejected - len(result.problems)} more", err=True)

    _run(go)


@contextmanager
def _counter(unit: str, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress line with a running count and rate, on terminals only."""
    if not enabled or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,.0f} " + unit),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("ingesting", total=None)
        yield lambda n: progress.advance(task, n)


# -- sync -------------------------------------------------------------------------------------


class _SyncBar:
    """Rich progress bars for records chunked and chunks embedded, with rate and ETA."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._records: TaskID | None = None
        self._chunks: TaskID | None = None

    def __enter__(self) -> _SyncBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, collection: str, records: int, chunks: int) -> None:
        self._records = self._progress.add_task(
            f"{collection}: chunk records", total=records, rate=""
        )
        self._chunks = self._progress.add_task(f"{collection}: embed chunks", total=chunks, rate="")

    def chunked(self, records: int, new_chunks: int) -> None:
        if self._records is None or self._chunks is None:
            return
        self._progress.advance(self._records, records)
        task = self._progress.tasks[self._chunks]
        self._progress.update(self._chunks, total=(task.total or 0) + new_chunks)

    def embedded(self, chunks: int) -> None:
        if self._chunks is None:
            return
        self._progress.advance(self._chunks, chunks)
        speed = self._progress.tasks[self._chunks].speed
        self._progress.update(self._chunks, rate=f"{speed:,.0f}/s" if speed else "")


@app.command()
def sync(
    collection: Annotated[str | None, typer.Argument(help="Collection (default: all).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Texts per model call (default EMBEDPLAT_BATCH_SIZE or 64).")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Re-queue parked failures first.")
    ] = False,
    reconcile: Annotated[
        bool, typer.Option("--reconcile", help="Find and repair drift before syncing.")
    ] = False,
    no_index: Annotated[
        bool, typer.Option("--no-index", help="Do not build the ANN index afterwards.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Chunk changed records and embed chunks that lack a current vector."""

    def go() -> None:
        if batch_size is not None and batch_size < 1:
            raise typer.BadParameter("--batch-size must be at least 1")
        with _platform() as platform:
            extra: dict[str, Any] = {}
            if retry_failed:
                extra["requeued"] = platform.retry_failed(collection)
            if reconcile:
                extra["reconcile"] = platform.reconcile(collection).to_json()
            options = platform.sync_options(batch_size=batch_size, build_index=not no_index)
            if json_out or not sys.stderr.isatty():
                report = platform.sync(collection, options=options)
            else:
                with _SyncBar() as bar:
                    report = platform.sync(collection, options=options, progress=bar)
        if json_out:
            _print_json({**report.to_json(), **extra})
            return
        for key, value in extra.items():
            typer.echo(f"{key}: {value}")
        typer.echo(
            f"chunked {report.records_chunked} records, embedded {report.chunks_embedded} chunks, "
            f"{report.chunks_failed} failed ({report.chunks_parked} parked) "
            f"in {report.seconds:.1f}s"
        )
        for name in report.indexes_built:
            typer.echo(f"built index {name}")

    _run(go)


# -- search -----------------------------------------------------------------------------------


@app.command()
def search(
    collection: str,
    query: Annotated[
        list[str] | None, typer.Argument(help="Query text (words are joined).")
    ] = None,
    queries: Annotated[
        Path | None,
        typer.Option("--queries", help='JSON Lines file of {"text", "id"?} queries.'),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Records per query.")] = 10,
    filter_json: Annotated[
        str | None, typer.Option("--filter", help='Metadata filter, e.g. \'{"topic": "sport"}\'.')
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Find the records nearest to a query text (or to each query of a file)."""

    def go() -> None:
        from embedplat.errors import InvalidInputError

        batch = _load_queries(query, queries)
        filter_value: dict[str, Any] | None = None
        if filter_json:
            try:
                filter_value = json.loads(filter_json)
            except ValueError as exc:
                raise InvalidInputError(f"--filter is not valid JSON: {exc}") from None
            if not isinstance(filter_value, dict):
                raise InvalidInputError("--filter must be a JSON object")
        if k < 1:
            raise InvalidInputError("-k must be at least 1")
        with _platform() as platform:
            results = platform.search_many(
                collection, [text for _, text in batch], k=k, filter=filter_value
            )
        for (query_id, text), hits in zip(batch, results, strict=True):
            if json_out:
                _print_json(
                    {"query_id": query_id, "query": text, "hits": [h.to_json() for h in hits]}
                )
                continue
            typer.echo(f"# {text}")
            if not hits:
                typer.echo("  (no results)")
            for rank, hit in enumerate(hits, 1):
                snippet = " ".join(hit.chunk.split())[:100]
                typer.echo(f"{rank:>3}. {hit.score:.3f}  {hit.id}  {snippet}")

    _run(go)


def _load_queries(words: list[str] | None, path: Path | None) -> list[tuple[Any, str]]:
    from embedplat.errors import InvalidInputError

    if words and path:
        raise InvalidInputError("give a query text or --queries FILE, not both")
    if words:
        return [(0, " ".join(words))]
    if path is None:
        raise InvalidInputError("give a query text or --queries FILE.jsonl")
    batch: list[tuple[Any, str]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise InvalidInputError(f"{path}:{number}: not valid JSON ({exc})") from None
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("text"), str)
            or not obj["text"].strip()
        ):
            raise InvalidInputError(f'{path}:{number}: expected an object with a "text" string')
        batch.append((obj.get("id", len(batch)), obj["text"]))
    if not batch:
        raise InvalidInputError(f"{path}: no queries")
    return batch


# -- status -----------------------------------------------------------------------------------


@app.command()
def status(json_out: JsonFlag = False) -> None:
    """Per collection: records, chunks, embedded chunks, stale, failed, model, queue lag."""

    def go() -> None:
        with _platform() as platform:
            rows = platform.status()
        if json_out:
            _print_json({"collections": [row.to_json() for row in rows]})
            return
        if not rows:
            typer.echo("no collections; create one with `embedplat ingest NAME FILE`")
            return
        from rich.console import Console
        from rich.table import Table

        table = Table()
        for column in (
            "collection",
            "model",
            "records",
            "chunks",
            "embedded",
            "stale",
            "failed",
            "lag",
        ):
            table.add_column(
                column, justify="left" if column in ("collection", "model") else "right"
            )
        for row in rows:
            lag = "-" if row.lag_seconds is None else f"{row.lag_seconds:.0f}s"
            table.add_row(
                row.name,
                row.model,
                f"{row.records:,}",
                f"{row.chunks:,}",
                f"{row.embedded:,}",
                f"{row.stale:,}",
                f"{row.failed:,}",
                lag,
            )
        Console().print(table)

    _run(go)


if __name__ == "__main__":  # pragma: no cover
    main()
