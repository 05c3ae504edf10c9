"""`embedplat export`: records or chunks (optionally with vectors) as JSON Lines or Parquet."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Annotated, cast

import typer

from embedplat.cli.app import app, handle_errors, open_platform
from embedplat.cli.options import CollectionArg, ExportFormatChoice
from embedplat.cli.output import PrintableWriter, bar, shown
from embedplat.errors import InvalidInputError


@app.command()
@handle_errors()
def export(
    collection: CollectionArg,
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
    if output_format is ExportFormatChoice.parquet and output is None:
        raise InvalidInputError("--format parquet needs --output PATH")
    show_bar = sys.stderr.isatty() and (output is not None or not sys.stdout.isatty())
    with open_platform() as platform:
        total = platform.export_count(collection, chunks=chunks) if show_bar else 0
        with bar("exporting", total, enabled=show_bar) as advance:
            # On stdout, characters that could drive a terminal (ESC, U+202E) go out as JSON
            # escapes: the same JSON. A file gets the text exactly as stored.
            stream = cast(IO[str], PrintableWriter(sys.stdout))
            written = platform.export(
                collection,
                output if output is not None else stream,
                chunks=chunks,
                vectors=vectors,
                format=output_format.value,
                progress=advance,
            )
    if output is not None:
        unit = "chunks" if chunks else "records"
        typer.echo(f"exported {written:,} {unit} to {shown(output)}", err=True)
