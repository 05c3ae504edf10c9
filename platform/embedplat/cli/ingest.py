"""`embedplat ingest`: JSON Lines, CSV, text/markdown files and folders, or stdin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from embedplat.cli.app import app, handle_errors, open_platform
from embedplat.cli.options import CollectionArg, InputFormat, JsonFlag, OnErrorChoice
from embedplat.cli.output import counter, print_json
from embedplat.errors import IngestError

if TYPE_CHECKING:
    from embedplat.ingest import SkippedFile

#: Skipped files listed one per line on stderr; the rest are counted (all are in --json).
SKIPPED_SHOWN = 10


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
    inside the folder); other and hidden files are listed as skipped.
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
        return
    typer.echo(
        f"{collection}: {result.inserted} inserted, {result.updated} updated, "
        f"{result.metadata_updated} metadata-only, {result.unchanged} unchanged, "
        f"{result.rejected} rejected" + (f", {len(skipped)} files skipped" if skipped else "")
    )
    for problem in result.problems:
        typer.echo(f"  rejected {problem}", err=True)
    if result.rejected > len(result.problems):
        typer.echo(f"  ... and {result.rejected - len(result.problems)} more", err=True)
    _report_skipped(skipped)


def _report_skipped(skipped: list[SkippedFile]) -> None:
    for item in skipped[:SKIPPED_SHOWN]:
        typer.echo(f"  skipped {item.path}: {item.reason}", err=True)
    if len(skipped) > SKIPPED_SHOWN:
        typer.echo(
            f"  ... and {len(skipped) - SKIPPED_SHOWN} more skipped (all are in --json)",
            err=True,
        )


def _skipped_json(skipped: list[SkippedFile]) -> list[dict[str, Any]]:
    return [{"path": item.path, "reason": item.reason} for item in skipped]
