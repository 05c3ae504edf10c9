"""`embedplat index`: (re)build a collection's ANN index concurrently."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from embedplat.cli.app import app, handle_errors, open_platform
from embedplat.cli.options import CollectionArg, IndexMethod, JsonFlag
from embedplat.cli.output import print_json, shown
from embedplat.errors import InvalidInputError

if TYPE_CHECKING:
    from embedplat.api import Platform


@app.command()
@handle_errors()
def index(
    collection: CollectionArg,
    method: Annotated[IndexMethod, typer.Option(help="Index type.")] = IndexMethod.hnsw,
    m: Annotated[int | None, typer.Option("--m", help="HNSW: links per node (default 16).")] = None,
    ef_construction: Annotated[
        int | None, typer.Option(help="HNSW: candidate list while building (default 64).")
    ] = None,
    lists: Annotated[
        int | None,
        typer.Option(
            help="IVFFlat: number of lists (default rows / 1000); at most the number of vectors."
        ),
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
    with open_platform() as platform:
        if lists is not None and method is IndexMethod.ivfflat:
            _check_lists(platform, collection, lists)
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
        print_json(report.to_json())
        return
    options = ", ".join(f"{key}={value}" for key, value in report.options.items())
    if not report.built:
        typer.echo(f"{shown(collection)}: stored index options ({options}); {report.note}")
        return
    verb = "rebuilt" if report.replaced else "built"
    typer.echo(
        f"{verb} {shown(report.index)} ({options}) over {report.vectors:,} vectors "
        f"in {report.seconds:.1f}s"
    )


def _check_lists(platform: Platform, collection: str, lists: int) -> None:
    """Refuse more IVFFlat lists than vectors.

    k-means cannot fill more lists than there are vectors: the extra lists stay empty, probes
    land in them, and recall drops with no error from PostgreSQL. With nothing embedded yet the
    options are only stored, so there is nothing to compare with.
    """
    rows = {row.name: row for row in platform.status()}
    row = rows.get(collection)
    if row is None or row.embedded == 0:
        return  # an unknown collection fails in build_index with its own message
    if lists > row.embedded:
        raise InvalidInputError(
            f"--lists {lists} is more than the {row.embedded:,} vectors of {collection!r}: "
            f"IVFFlat would leave lists empty and lose recall; use at most {row.embedded:,} "
            f"(pgvector suggests rows / 1000, the default when --lists is left out)"
        )
