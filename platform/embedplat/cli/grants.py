"""`embedplat grant | revoke | grants`: per-collection read and write grants (row-level
security; docs/security.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from embedplat.cli.app import app, handle_errors, open_platform
from embedplat.cli.options import CollectionArg, JsonFlag
from embedplat.cli.output import print_json

RoleArg = Annotated[
    str, typer.Argument(metavar="ROLE", help="PostgreSQL role (a login role or a group).")
]


@app.command("grant")
@handle_errors()
def grant_command(
    role: RoleArg,
    collection: CollectionArg,
    write: Annotated[
        bool, typer.Option("--write", help="Also let the role write the collection's records.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Let ROLE read COLLECTION (search, records, vectors); --write: also write its records."""
    from embedplat import grants

    with open_platform() as platform, platform.connection() as conn:
        made = grants.grant(conn, role, collection, write=write)
    if json_out:
        print_json(made.to_json())
    else:
        access = "read and write" if made.write else "read"
        typer.echo(f"granted {access} on collection {collection!r} to role {role!r}")


@app.command("revoke")
@handle_errors()
def revoke_command(role: RoleArg, collection: CollectionArg, json_out: JsonFlag = False) -> None:
    """Take ROLE's grant on COLLECTION back (it then sees nothing of it)."""
    from embedplat import grants

    with open_platform() as platform, platform.connection() as conn:
        revoked = grants.revoke(conn, role, collection)
    if json_out:
        print_json({"role": role, "collection": collection, "revoked": revoked})
    elif revoked:
        typer.echo(f"revoked role {role!r}'s grant on collection {collection!r}")
    else:
        typer.echo(f"role {role!r} had no grant on collection {collection!r}")


@app.command("grants")
@handle_errors()
def grants_command(
    collection: Annotated[
        str | None,
        typer.Argument(metavar="COLLECTION", help="Only this collection's grants."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """List which roles may read (or write) which collections."""
    from embedplat import grants

    with open_platform() as platform, platform.connection() as conn:
        rows = grants.list_grants(conn, collection)
    if json_out:
        print_json({"grants": [row.to_json() for row in rows]})
        return
    if not rows:
        typer.echo("no grants")
    for row in rows:
        access = "write" if row.write else "read"
        typer.echo(f"{row.collection!r}\t{row.role!r}\t{access}")
