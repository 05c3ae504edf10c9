"""The `embedplat` command line: one module per concept, one error decorator.

:mod:`embedplat.cli.app` holds the Typer app, the exit rule and :func:`handle_errors`; each
other module registers the commands of one concept. docs/cli.md is generated from them
(``python -m embedplat.cli.reference``).
"""

from __future__ import annotations

# Imported for their commands, in the order `embedplat --help` lists them (so not sorted).
# isort: off
from embedplat.cli import (  # noqa: F401
    db,
    ingest,
    attach,
    sync,
    search,
    index,
    analytics,
    export,
    status,
    worker,
    collections,
    model,
    grants,
)

# isort: on
from embedplat.cli.app import app, main

__all__ = ["app", "main"]
