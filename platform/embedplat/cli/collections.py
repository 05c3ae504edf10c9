"""`embedplat collection create | list | drop`."""

from __future__ import annotations

from typing import Annotated

import typer

from embedplat.cli.app import collection_app, handle_errors, open_platform, usage_error
from embedplat.cli.options import BackendOption, CollectionArg, JsonFlag
from embedplat.cli.output import print_json, shown
from embedplat.config import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL


@collection_app.command("create")
@handle_errors()
def collection_create(
    name: CollectionArg,
    model: Annotated[str, typer.Option(help="Embedding model name.")] = DEFAULT_MODEL,
    chunk_tokens: Annotated[
        int, typer.Option(help="Target tokens per chunk.")
    ] = DEFAULT_CHUNK_TOKENS,
    chunk_overlap: Annotated[
        int, typer.Option(help="Tokens shared by neighbouring chunks of a long paragraph.")
    ] = DEFAULT_CHUNK_OVERLAP,
    backend: BackendOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Create a collection (`ingest` also creates a missing one, with these defaults)."""
    with open_platform() as platform:
        info = platform.create_collection(
            name,
            model=model,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            backend=backend.value if backend is not None else None,
        )
    if json_out:
        print_json(info.to_json())
    else:
        typer.echo(f"created collection {info.name!r} (model {shown(info.model_name)})")


@collection_app.command("list")
@handle_errors()
def collection_list(json_out: JsonFlag = False) -> None:
    """List collections."""
    with open_platform() as platform:
        infos = platform.collections()
    if json_out:
        print_json({"collections": [info.to_json() for info in infos]})
        return
    if not infos:
        typer.echo("no collections")
    for info in infos:
        typer.echo(
            f"{shown(info.name)}\tmodel={shown(info.model_name)}"
            f"\tchunk_tokens={info.chunk_tokens}\tchunk_overlap={info.chunk_overlap}"
        )


@collection_app.command("drop")
@handle_errors()
def collection_drop(
    name: CollectionArg,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm deleting everything in it.")] = False,
) -> None:
    """Delete a collection with its records, chunks and embeddings (needs --yes)."""
    if not yes:
        # A usage error (exit status 2): the command line lacks its confirmation.
        raise usage_error(
            f"dropping {name!r} deletes all its records and embeddings; "
            "repeat with --yes to confirm"
        )
    with open_platform() as platform:
        platform.drop_collection(name)
    typer.echo(f"dropped collection {name!r}")
