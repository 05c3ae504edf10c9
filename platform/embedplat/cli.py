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
FilterOption = Annotated[
    str | None,
    typer.Option(
        "--filter",
        help='Metadata filter (docs/filters.md), e.g. \'{"topic": "sport", "year": {"$gte": 2020}}\'.',
    ),
]
EfSearchOption = Annotated[
    int | None, typer.Option(help="HNSW ef_search for this query (recall vs speed).")
]
ProbesOption = Annotated[int | None, typer.Option(help="IVFFlat probes for this query.")]


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
    filter_json: FilterOption = None,
    hybrid: Annotated[
        bool,
        typer.Option("--hybrid", help="Fuse full-text and vector search (reciprocal rank fusion)."),
    ] = False,
    min_similarity: Annotated[
        float | None, typer.Option(help="Leave out hits below this cosine similarity.")
    ] = None,
    per_chunk: Annotated[
        bool, typer.Option("--per-chunk", help="One row per chunk instead of per record.")
    ] = False,
    ef_search: EfSearchOption = None,
    probes: ProbesOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Find the records nearest to a query text (or to each query of a file)."""

    def go() -> None:
        from embedplat.errors import InvalidInputError

        batch = _load_queries(query, queries)
        filter_value = _parse_filter(filter_json)
        if k < 1:
            raise InvalidInputError("-k must be at least 1")
        if hybrid and (min_similarity is not None or per_chunk):
            raise InvalidInputError(
                "--min-similarity and --per-chunk apply to vector search, not --hybrid"
            )
        with _platform() as platform:
            results = platform.search_many(
                collection,
                [text for _, text in batch],
                k=k,
                filter=filter_value,
                hybrid=hybrid,
                min_similarity=min_similarity,
                per_record=not per_chunk,
                ef_search=ef_search,
                probes=probes,
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


def _parse_filter(text: str | None) -> dict[str, Any] | None:
    """--filter's JSON, checked against the filter language (docs/filters.md)."""
    if not text:
        return None
    from embedplat.filters import parse_filter

    return parse_filter(text)


@app.command()
def similar(
    collection: str,
    record_id: Annotated[str, typer.Argument(metavar="ID", help="External id of the record.")],
    k: Annotated[int, typer.Option("-k", help="Records to return.")] = 10,
    filter_json: FilterOption = None,
    ef_search: EfSearchOption = None,
    probes: ProbesOption = None,
    json_out: JsonFlag = False,
) -> None:
    """More like this: the records nearest to record ID (by the mean of its chunk vectors)."""

    def go() -> None:
        filter_value = _parse_filter(filter_json)
        with _platform() as platform:
            hits = platform.similar(
                collection, record_id, k=k, filter=filter_value, ef_search=ef_search, probes=probes
            )
        if json_out:
            for hit in hits:
                _print_json(hit.to_json())
            return
        if not hits:
            typer.echo("(no results)")
        for rank, hit in enumerate(hits, 1):
            snippet = " ".join(hit.chunk.split())[:100]
            typer.echo(f"{rank:>3}. {hit.score:.3f}  {hit.id}  {snippet}")

    _run(go)


class IndexMethod(StrEnum):
    hnsw = "hnsw"
    ivfflat = "ivfflat"


@app.command()
def index(
    collection: str,
    method: Annotated[IndexMethod, typer.Option(help="Index type.")] = IndexMethod.hnsw,
    m: Annotated[int | None, typer.Option("--m", help="HNSW: links per node (default 16).")] = None,
    ef_construction: Annotated[
        int | None, typer.Option(help="HNSW: candidate list while building (default 64).")
    ] = None,
    lists: Annotated[
        int | None, typer.Option(help="IVFFlat: number of lists (default rows / 1000).")
    ] = None,
    ef_search: Annotated[
        int | None, typer.Option(help="HNSW: default ef_search stored for searches.")
    ] = None,
    probes: Annotated[
        int | None,
        typer.Option(help="IVFFlat: default probes stored for searches (default sqrt(lists))."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """(Re)build COLLECTION's ANN index concurrently; searches keep working meanwhile."""

    def go() -> None:
        with _platform() as platform:
            report = platform.build_index(
                collection,
                method=method.value,
                m=m,
                ef_construction=ef_construction,
                lists=lists,
                ef_search=ef_search,
                probes=probes,
            )
        if json_out:
            _print_json(report.to_json())
            return
        options = ", ".join(f"{key}={value}" for key, value in report.options.items())
        if not report.built:
            typer.echo(f"{collection}: stored index options ({options}); {report.note}")
            return
        verb = "rebuilt" if report.replaced else "built"
        typer.echo(
            f"{verb} {report.index} ({options}) over {report.vectors:,} vectors "
            f"in {report.seconds:.1f}s"
        )

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


# -- duplicates, anomalies, export ------------------------------------------------------------


@app.command()
def duplicates(
    collection: str,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Minimum similarity of a pair (default 0.7, calibrated for all-MiniLM-L6-v2)."
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Nearest chunks probed per chunk.")] = 10,
    groups: Annotated[
        bool, typer.Option("--groups", help="Connected groups with one keeper each, not pairs.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Near-duplicate records of COLLECTION (pairs, or --groups), most similar first."""

    def go() -> None:
        options: dict[str, Any] = {"k": k}
        if threshold is not None:
            options["threshold"] = threshold
        with _platform() as platform:
            if groups:
                members = platform.duplicate_groups(collection, **options)
            else:
                pairs = platform.near_duplicates(collection, **options)
        if groups:
            if json_out:
                for member in members:
                    _print_json(member.to_json())
                return
            if not members:
                typer.echo("no near-duplicates")
            for member in members:
                mark = "keep" if member.keeper else "    "
                typer.echo(f"{member.group:>5}  {mark}  {member.id}")
            return
        if json_out:
            for pair in pairs:
                _print_json(pair.to_json())
            return
        if not pairs:
            typer.echo("no near-duplicates")
        for pair in pairs:
            typer.echo(f"{pair.similarity:.3f}  {pair.a}  {pair.b}")

    _run(go)


@app.command()
def anomalies(
    collection: str,
    reference: Annotated[
        str | None,
        typer.Option(help="Score against this collection (same model) instead of COLLECTION."),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Nearest records averaged per score.")] = 10,
    top: Annotated[
        int | None, typer.Option("--top", help="Only the N most anomalous records.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Anomaly score per record (mean distance to its k nearest records), highest first."""

    def go() -> None:
        with _platform() as platform:
            scores = platform.anomaly_scores(collection, k=k, reference=reference, top=top)
        if json_out:
            for score in scores:
                _print_json(score.to_json())
            return
        if not scores:
            typer.echo("no embedded records to score")
        for score in scores:
            typer.echo(f"{score.rank:>6}. {score.score:.4f}  {score.percentile:6.2f}%  {score.id}")

    _run(go)


class ExportFormatChoice(StrEnum):
    jsonl = "jsonl"
    parquet = "parquet"


@app.command()
def export(
    collection: str,
    chunks: Annotated[bool, typer.Option("--chunks", help="One row per chunk.")] = False,
    vectors: Annotated[
        bool, typer.Option("--vectors", help="Include the active model's vectors.")
    ] = False,
    output_format: Annotated[
        ExportFormatChoice, typer.Option("--format", help="jsonl (default) or parquet.")
    ] = ExportFormatChoice.jsonl,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default: stdout, jsonl only)."),
    ] = None,
) -> None:
    """Export COLLECTION's records (or chunks, optionally with vectors) as JSON Lines or Parquet."""

    def go() -> None:
        from embedplat.errors import InvalidInputError

        if output_format is ExportFormatChoice.parquet and output is None:
            raise InvalidInputError("--format parquet needs --output PATH")
        show_bar = sys.stderr.isatty() and (output is not None or not sys.stdout.isatty())
        with _platform() as platform:
            total = platform.export_count(collection, chunks=chunks) if show_bar else 0
            with _bar("exporting", total, enabled=show_bar) as advance:
                written = platform.export(
                    collection,
                    output if output is not None else sys.stdout,
                    chunks=chunks,
                    vectors=vectors,
                    format=output_format.value,
                    progress=advance,
                )
        if output is not None:
            unit = "chunks" if chunks else "records"
            typer.echo(f"exported {written:,} {unit} to {output}", err=True)

    _run(go)


@contextmanager
def _bar(description: str, total: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with count, rate and ETA on stderr (a no-op when disabled)."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


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


# -- worker -----------------------------------------------------------------------------------


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="Worker processes (default: one per CPU core)."),
    ] = None,
    beat: Annotated[
        bool,
        typer.Option(
            "--beat",
            help="Also run the scheduler (sweep, reconcile, index upkeep) and the change "
            "listener in this worker. Run exactly one per deployment.",
        ),
    ] = False,
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run a Celery worker for embedplat's tasks (same as `celery -A embedplat_workers.app worker`).

    Broker from EMBEDPLAT_BROKER_URL; database from EMBEDPLAT_DATABASE_URL, else the embedded
    server. Needs Celery, which comes with the `workers` extra of embedplat.
    """

    def go() -> None:
        from embedplat.errors import ConfigurationError, InvalidInputError

        if concurrency is not None and concurrency < 1:
            raise InvalidInputError("--concurrency must be at least 1")
        if loglevel.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise InvalidInputError(
                f"--loglevel must be DEBUG, INFO, WARNING or ERROR, got {loglevel!r}"
            )
        # Celery is imported here only: `embedplat` itself never depends on it.
        try:
            from embedplat_workers.app import app as celery_app
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in (
                "celery",
                "kombu",
                "redis",
                "embedplat_workers",
            ):
                raise ConfigurationError(
                    f"the worker needs Celery ({exc.name} is missing): "
                    "pip install 'embedplat[workers]'"
                ) from None
            raise
        argv = ["worker", f"--loglevel={loglevel.upper()}"]
        if concurrency is not None:
            argv.append(f"--concurrency={concurrency}")
        if beat:
            home = _settings().home
            home.mkdir(parents=True, exist_ok=True)
            argv += ["--beat", f"--schedule={home / 'celerybeat-schedule'}"]
        celery_app.worker_main(argv)

    _run(go)


if __name__ == "__main__":  # pragma: no cover
    main()
