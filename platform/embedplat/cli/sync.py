"""`embedplat sync`: chunk changed records, embed stale chunks, build the ANN index."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from embedplat.cli.app import app, fail, handle_errors, open_platform
from embedplat.cli.options import JsonFlag
from embedplat.cli.output import SyncBar, print_json, shown
from embedplat.config import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from embedplat.sync import ReconcileReport, SyncReport


@app.command()
@handle_errors()
def sync(
    collection: Annotated[
        str | None, typer.Argument(metavar="COLLECTION", help="Collection (default: all).")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"Texts per model call (default EMBEDPLAT_BATCH_SIZE or {DEFAULT_BATCH_SIZE}).",
        ),
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
    with open_platform() as platform:
        extra: dict[str, Any] = {}
        if retry_failed:
            extra["requeued"] = platform.retry_failed(collection)
        drift: ReconcileReport | None = None
        if reconcile:
            drift = platform.reconcile(collection)
            extra["reconcile"] = drift.to_json()
        options = platform.sync_options(
            batch_size=batch_size, build_index=not no_index, wait_retired=True
        )
        if json_out or not sys.stderr.isatty():
            report = platform.sync(collection, options=options)
        else:
            with SyncBar() as bar:
                report = platform.sync(collection, options=options, progress=bar)
    if json_out:
        print_json({**report.to_json(), **extra})
    else:
        _print_report(report, extra, drift)
    if report.failures:
        # A sync of every collection carries on past a failing one; the exit status says so.
        failed = "; ".join(f"{f.collection!r}: {f.error}" for f in report.failures)
        fail(f"sync failed for {len(report.failures)} collection(s): {failed}")


def _print_report(report: SyncReport, extra: dict[str, Any], drift: ReconcileReport | None) -> None:
    if "requeued" in extra:
        typer.echo(f"re-queued {extra['requeued']} parked failures")
    if drift is not None:
        typer.echo(reconcile_line(drift))
    records_failed = (
        f" ({report.records_failed} failed, {report.records_parked} parked)"
        if report.records_failed
        else ""
    )
    typer.echo(
        f"chunked {report.records_chunked} records{records_failed}, "
        f"embedded {report.chunks_embedded} chunks, "
        f"{report.chunks_failed} failed ({report.chunks_parked} parked) "
        f"in {report.seconds:.1f}s"
    )
    for name in report.indexes_built:
        typer.echo(f"built index {shown(name)}")
    if report.chunks_leased_elsewhere:
        typer.echo(f"note: {leases_line(report)}", err=True)
    for note in report.notes:
        typer.echo(f"note: {shown(note)}", err=True)


def leases_line(report: SyncReport) -> str:
    """What this sync left to other processes: their chunks, and whether each holder lives."""
    holders = [
        f"{shown(h.holder)} ({'alive' if h.alive else 'gone'}, {h.chunks:,} chunks of "
        f"{h.collection!r})"
        for h in report.leased_elsewhere
    ]
    gone = any(not h.alive for h in report.leased_elsewhere)
    return (
        f"{report.chunks_leased_elsewhere:,} chunks are leased by other processes: "
        + ", ".join(holders)
        + "; a live holder embeds its chunks"
        + (", the next sync takes a gone holder's" if gone else "")
    )


#: How `sync --reconcile` names each count of the reconcile report (singular, plural).
_DRIFT_LABELS = {
    "records_rechunked": ("record to re-chunk", "records to re-chunk"),
    "chunks_requeued": ("chunk re-queued", "chunks re-queued"),
    "stale_vectors_removed": ("stale vector removed", "stale vectors removed"),
    "foreign_vectors_removed": (
        "vector of another model removed",
        "vectors of other models removed",
    ),
    "queue_hashes_fixed": ("queue hash fixed", "queue hashes fixed"),
}


def reconcile_line(report: ReconcileReport) -> str:
    """What a reconcile pass repaired, as one line (every count of its JSON that is not 0)."""
    found = []
    for key, count in report.to_json().items():
        if not count:
            continue
        # A count added to the report later still shows, under its own name.
        one, many = _DRIFT_LABELS.get(key, (key.replace("_", " "), key.replace("_", " ")))
        found.append(f"{count} {one if count == 1 else many}")
    return "reconcile: " + (", ".join(found) if found else "no drift found")
