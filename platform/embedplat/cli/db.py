"""`embedplat init` and `embedplat db ...`: the schema and the embedded server."""

from __future__ import annotations

import typer

from embedplat.cli.app import app, db_app, handle_errors
from embedplat.cli.options import JsonFlag
from embedplat.cli.output import print_json
from embedplat.config import Settings


@app.command()
@handle_errors()
def init(json_out: JsonFlag = False) -> None:
    """Create or upgrade the embedplat schema (idempotent; safe to run concurrently)."""
    from embedplat.db import migrate
    from embedplat.db.connection import check_database, redact, resolve_database_url

    url = resolve_database_url(Settings.from_env())
    pgvector = check_database(url)
    migrate.upgrade(url)
    revision = migrate.current_revision(url)
    if json_out:
        print_json({"url": redact(url), "revision": revision, "pgvector": pgvector})
    else:
        typer.echo(f"schema embedplat at revision {revision} on {redact(url)}")


@db_app.command("start")
@handle_errors()
def db_start() -> None:
    """Start the embedded server (no-op when it runs already); prints its URL."""
    from embedplat.db.embedded import EmbeddedServer

    current = Settings.from_env()
    _warn_if_external(current)
    typer.echo(EmbeddedServer(current.home).start())


@db_app.command("stop")
@handle_errors()
def db_stop() -> None:
    """Stop the embedded server."""
    from embedplat.db.embedded import EmbeddedServer

    stopped = EmbeddedServer(Settings.from_env().home).stop()
    typer.echo("stopped" if stopped else "not running")


@db_app.command("status")
@handle_errors()
def db_status(json_out: JsonFlag = False) -> None:
    """Whether the embedded server runs, where its data lives, its URL."""
    from embedplat.db.embedded import EmbeddedServer

    current = Settings.from_env()
    status = EmbeddedServer(current.home).status()
    if json_out:
        print_json(
            {
                "running": status.running,
                "pid": status.pid,
                "port": status.port,
                "data_dir": str(status.data_dir),
                "url": status.url,
                "external_database": bool(current.database_url),
            }
        )
        return
    typer.echo(f"running:  {'yes' if status.running else 'no'}")
    if status.running:
        typer.echo(f"pid:      {status.pid}")
        typer.echo(f"url:      {status.url}")
    typer.echo(f"data dir: {status.data_dir}")
    _warn_if_external(current)


@db_app.command("url")
@handle_errors()
def db_url() -> None:
    """Print the database URL (starts the embedded server if needed); `psql $(embedplat db url)`."""
    from embedplat.db.connection import libpq_url, resolve_database_url

    typer.echo(libpq_url(resolve_database_url(Settings.from_env())))


def _warn_if_external(current: Settings) -> None:
    if current.database_url:
        typer.echo(
            "note: EMBEDPLAT_DATABASE_URL is set, so commands use that database, not this one",
            err=True,
        )
