"""`embedplat duplicates` and `embedplat anomalies`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from embedplat.analytics import (
    DEFAULT_ANOMALY_K,
    DEFAULT_DUPLICATE_K,
    DEFAULT_DUPLICATE_THRESHOLD,
    MAX_ANALYTICS_K,
)
from embedplat.cli.app import app, handle_errors, open_platform
from embedplat.cli.options import CollectionArg, JsonFlag
from embedplat.cli.output import print_json, shown


@app.command()
@handle_errors()
def duplicates(
    collection: CollectionArg,
    threshold: Annotated[
        float | None,
        typer.Option(
            help=f"Minimum similarity of a pair (default {DEFAULT_DUPLICATE_THRESHOLD}, "
            "calibrated for all-MiniLM-L6-v2)."
        ),
    ] = None,
    k: Annotated[
        int, typer.Option("-k", help=f"Nearest chunks probed per chunk (1 to {MAX_ANALYTICS_K}).")
    ] = DEFAULT_DUPLICATE_K,
    groups: Annotated[
        bool, typer.Option("--groups", help="Connected groups with one keeper each, not pairs.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Near-duplicate records of COLLECTION (pairs, or --groups), most similar first."""
    options: dict[str, Any] = {"k": k}
    if threshold is not None:
        options["threshold"] = threshold
    with open_platform() as platform:
        if groups:
            members = platform.duplicate_groups(collection, **options)
        else:
            pairs = platform.near_duplicates(collection, **options)
    if groups:
        if json_out:
            for member in members:
                print_json(member.to_json())
            return
        if not members:
            typer.echo("no near-duplicates")
        for member in members:
            mark = "keep" if member.keeper else "    "
            typer.echo(f"{member.group:>5}  {mark}  {shown(member.id)}")
        return
    if json_out:
        for pair in pairs:
            print_json(pair.to_json())
        return
    if not pairs:
        typer.echo("no near-duplicates")
    for pair in pairs:
        typer.echo(f"{pair.similarity:.3f}  {shown(pair.a)}  {shown(pair.b)}")


@app.command()
@handle_errors()
def anomalies(
    collection: CollectionArg,
    reference: Annotated[
        str | None,
        typer.Option(help="Score against this collection (same model) instead of COLLECTION."),
    ] = None,
    k: Annotated[
        int,
        typer.Option("-k", help=f"Nearest records averaged per score (1 to {MAX_ANALYTICS_K})."),
    ] = DEFAULT_ANOMALY_K,
    top: Annotated[
        int | None, typer.Option("--top", help="Only the N most anomalous records.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Anomaly score per record (mean distance to its k nearest records), highest first."""
    with open_platform() as platform:
        scores = platform.anomaly_scores(collection, k=k, reference=reference, top=top)
    if json_out:
        for score in scores:
            print_json(score.to_json())
        return
    if not scores:
        typer.echo("no embedded records to score")
    for score in scores:
        typer.echo(
            f"{score.rank:>6}. {score.score:.4f}  {score.percentile:6.2f}%  {shown(score.id)}"
        )
