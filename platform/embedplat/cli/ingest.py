"""`embedplat ingest`: JSON Lines, CSV, text/markdown files and folders, or stdin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from embedplat.cli.app import app, fail, handle_errors, open_platform
from embedplat.cli.options import CollectionArg, InputFormat, JsonFlag, OnErrorChoice
from embedplat.cli.output import counter, print_json, shown
from embedplat.errors import IngestError

if TYPE_CHECKING:
    from embedplat.ingest import SkippedFile
    from embedplat.store import IngestResult

#: Skipped files listed one per line on stderr; the rest are counted (all are in --json).
SKIPPED_SHOWN = 10
#: Duplicate ids named in the summary line; the rest are counted (--json has the first ones).
DUPLICATES_SHOWN = 5


@app.command()
@handle_errors()
def ingest(
    collection: CollectionArg,
    paths: Annotated[
        list[str],
        typer.Argument(metavar="PATH", help="Files, folders, or - for stdin."),
    ],
    input_format: Annotated[
        InputFormat | None,
        typer.Option(
            "--format",
            help="Input format (default: from the file extension; stdin: jsonl).",
        ),
    ] = None,
    id_field: Annotated[str, typer.Option(help="Field holding the record id.")] = "id",
    text_field: Annotated[
        list[str] | None,
        typer.Option(
            help="Field(s) holding the text (default: text); repeat to join several with a "
            "blank line."
        ),
    ] = None,
    metadata_field: Annotated[
        list[str] | None,
        typer.Option(
            help="Field(s) to keep as metadata (default: the `metadata` object of a JSON row, "
            "every other column of a CSV row)."
        ),
    ] = None,
    on_error: Annotated[
        OnErrorChoice,
        typer.Option(help="fail: write nothing if any row is bad; skip: write the good rows."),
    ] = OnErrorChoice.fail,
    json_out: JsonFlag = False,
) -> None:
    """Upsert records from JSONL, CSV or text/markdown files into COLLECTION.

    COLLECTION is created with the defaults of `collection create` if it does not exist. A
    folder gives one record per .txt, .md, .markdown or .rst file (recursively; id = path
    inside the folder); other and hidden files are listed as skipped. With --on-error skip,
    an input whose every row is rejected fails (exit status 1).
    """
    from embedplat.ingest import read_records

    skipped: list[SkippedFile] = []
    items = read_records(
        paths,
        format=input_format.value if input_format else None,
        id_field=id_field,
        text_fields=tuple(text_field or ("text",)),
        metadata_fields=tuple(metadata_field) if metadata_field else None,
        on_skip=skipped.append,
    )
    with open_platform() as platform, counter("records", enabled=not json_out) as advance:
        try:
            result = platform.ingest_records(
                collection, items, on_error=on_error.value, progress=advance
            )
        except IngestError as exc:
            # The error line on stderr follows (the exit rule); --json adds the details.
            if not json_out:
                _report_skipped(skipped)
                raise
            print_json(
                {
                    "error": str(exc),
                    "problems": [
                        {"source": p.source, "line": p.line, "reason": p.reason}
                        for p in exc.problems
                    ],
                    "skipped": _skipped_json(skipped),
                }
            )
            raise
    if json_out:
        print_json({**result.to_json(), "skipped": _skipped_json(skipped)})
    else:
        typer.echo(summary_line(collection, result, len(skipped)))
        for problem in result.problems:
            typer.echo(f"  rejected {shown(problem)}", err=True)
        if result.rejected > len(result.problems):
            typer.echo(f"  ... and {result.rejected - len(result.problems)} more", err=True)
        _report_skipped(skipped)
    if result.rejected and not result.accepted:
        # --on-error skip with nothing good in the input: a failure, not a quiet 0.
        rows = f"{result.rejected:,} row{'s' if result.rejected != 1 else ''}"
        where = "the problems are in the JSON above" if json_out else "listed above"
        fail(f"nothing was ingested: every input row was rejected ({rows}, {where})")


def summary_line(collection: str, result: IngestResult, skipped_files: int = 0) -> str:
    """``docs: 3 inserted, ... 1 rejected, 2 duplicates (the later row won: 'a', 'b')``."""
    line = (
        f"{shown(collection)}: {result.inserted} inserted, {result.updated} updated, "
        f"{result.metadata_updated} metadata-only, {result.unchanged} unchanged, "
        f"{result.rejected} rejected"
    )
    if result.duplicates:
        # repr: an id with a comma, a quote or a control character stays unambiguous.
        ids = [repr(i) for i in result.duplicate_ids[:DUPLICATES_SHOWN]]
        if result.duplicates > len(ids):
            ids.append("...")
        noun = "duplicate" if result.duplicates == 1 else "duplicates"
        line += f", {result.duplicates} {noun} (the later row won: {', '.join(ids)})"
    if skipped_files:
        line += f", {skipped_files} files skipped"
    return line


def _report_skipped(skipped: list[SkippedFile]) -> None:
    for item in skipped[:SKIPPED_SHOWN]:
        typer.echo(f"  skipped {shown(item.path)}: {shown(item.reason)}", err=True)
    if len(skipped) > SKIPPED_SHOWN:
        typer.echo(
            f"  ... and {len(skipped) - SKIPPED_SHOWN} more skipped (all are in --json)",
            err=True,
        )


def _skipped_json(skipped: list[SkippedFile]) -> list[dict[str, Any]]:
    return [{"path": item.path, "reason": item.reason} for item in skipped]
