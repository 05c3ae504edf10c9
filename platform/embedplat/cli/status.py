"""`embedplat status`: per-collection counts and queue lag."""

from __future__ import annotations

import typer

from embedplat.cli.app import app, handle_errors, open_platform
from embedplat.cli.options import JsonFlag
from embedplat.cli.output import print_json

_COLUMNS = ("collection", "model", "records", "chunks", "embedded", "stale", "failed", "lag")


@app.command()
@handle_errors()
def status(json_out: JsonFlag = False) -> None:
    """Per collection: records, chunks, embedded chunks, stale, failed, model, queue lag."""
    with open_platform() as platform:
        rows = platform.status()
    if json_out:
        print_json({"collections": [row.to_json() for row in rows]})
        return
    if not rows:
        typer.echo("no collections; create one with `embedplat ingest NAME FILE`")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in _COLUMNS:
        table.add_column(column, justify="left" if column in ("collection", "model") else "right")
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
