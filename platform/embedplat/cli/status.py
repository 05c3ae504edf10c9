"""`embedplat status`: per-collection counts, queue lag and leases held."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from embedplat.cli.app import app, handle_errors, open_platform
from embedplat.cli.options import JsonFlag
from embedplat.cli.output import print_json, shown

if TYPE_CHECKING:
    from embedplat.status import CollectionStatus

_COLUMNS = (
    "collection",
    "model",
    "records",
    "chunks",
    "embedded",
    "stale",
    "leased",
    "failed",
    "lag",
)
_LEFT = ("collection", "model")
_PIPE_WIDTH = 1000


@app.command()
@handle_errors()
def status(json_out: JsonFlag = False) -> None:
    """Per collection: records, chunks, embedded, stale, leased and failed chunks, queue lag.

    Below the table: attached collections with their app table and health, model switches in
    progress (chunks done, rate, ETA), and the processes holding leases on chunks, alive or
    gone.
    """
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
    from rich.text import Text

    table = Table()
    for column in _COLUMNS:
        # Names wrap inside their cell on a narrow terminal rather than being cut short.
        table.add_column(
            column,
            justify="left" if column in _LEFT else "right",
            overflow="fold" if column in _LEFT else "ellipsis",
        )
    for row in rows:
        # Text, not str: rich would read a name like "[/bold]" as markup (and ":x:" as emoji).
        table.add_row(*(Text(cell) for cell in _cells(row)))
    # A pipe or file has no width: give the table what it needs instead of rich's 80 columns.
    Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH).print(table)
    for row in rows:
        if row.attached_to is not None:
            error = f": {shown(row.attachment_error)}" if row.attachment_error else ""
            typer.echo(
                f"{shown(row.name)}: attached to {shown(row.attached_to)} "
                f"({shown(row.attachment_state)}){error}"
            )
        if row.switch is not None:
            typer.echo(f"{shown(row.name)}: {_switch_line(row)}")
        for holder in row.lease_holders:
            state = "alive" if holder.alive else "gone"
            typer.echo(
                f"{shown(row.name)}: {holder.chunks:,} chunks leased by {shown(holder.holder)} "
                f"({state}) until {holder.leased_until.isoformat(timespec='seconds')}"
            )


def _cells(row: CollectionStatus) -> list[str]:
    lag = "-" if row.lag_seconds is None else f"{row.lag_seconds:.0f}s"
    return [
        shown(row.name),
        shown(row.model),
        f"{row.records:,}",
        f"{row.chunks:,}",
        f"{row.embedded:,}",
        f"{row.stale:,}",
        f"{row.leased_chunks:,}",
        f"{row.failed:,}",
        lag,
    ]


def _switch_line(row: CollectionStatus) -> str:
    switch = row.switch
    assert switch is not None
    share = switch.chunks_done / switch.chunks if switch.chunks else 1.0
    rate = switch.rate
    eta = switch.eta_seconds
    parts = [
        f"switching from {shown(switch.from_model)} to {shown(switch.to_model)}:",
        f"{switch.chunks_done:,} of {switch.chunks:,} chunks ({share:.0%})",
    ]
    if rate is not None:
        parts.append(f"{rate:,.1f} chunks/s")
    if eta is not None:
        parts.append(f"ETA {eta:,.0f}s")
    if switch.chunks_failed:
        parts.append(f"{switch.chunks_failed:,} failed")
    return ", ".join(parts)
