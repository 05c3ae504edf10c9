"""What commands print: JSON for scripts, result lines, rich progress on terminals (stderr)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from embedplat.search import SearchHit

__all__ = ["SyncBar", "bar", "counter", "print_hits", "print_json"]


def print_json(value: Any) -> None:
    """One JSON document on one line (UTF-8 as is, dates and paths as strings)."""
    typer.echo(json.dumps(value, ensure_ascii=False, default=str))


def print_hits(hits: Sequence[SearchHit], *, indent: str = "") -> None:
    """Search hits as ``rank. similarity  id  snippet`` lines."""
    if not hits:
        typer.echo(f"{indent}(no results)")
    for rank, hit in enumerate(hits, 1):
        snippet = " ".join(hit.chunk.split())[:100]
        typer.echo(f"{rank:>3}. {hit.score:.3f}  {hit.id}  {snippet}")


@contextmanager
def counter(unit: str, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress line with a running count and rate, on terminals only."""
    if not enabled or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,.0f} " + unit),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("ingesting", total=None)
        yield lambda n: progress.advance(task, n)


@contextmanager
def bar(description: str, total: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with count, rate and ETA on stderr (a no-op when disabled)."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


class SyncBar:
    """Rich progress bars for records chunked and chunks embedded, with rate and ETA."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._records: TaskID | None = None
        self._chunks: TaskID | None = None

    def __enter__(self) -> SyncBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, collection: str, records: int, chunks: int) -> None:
        self._records = self._progress.add_task(
            f"{collection}: chunk records", total=records, rate=""
        )
        self._chunks = self._progress.add_task(f"{collection}: embed chunks", total=chunks, rate="")

    def chunked(self, records: int, new_chunks: int) -> None:
        if self._records is None or self._chunks is None:
            return
        self._progress.advance(self._records, records)
        task = self._progress.tasks[self._chunks]
        self._progress.update(self._chunks, total=(task.total or 0) + new_chunks)

    def embedded(self, chunks: int) -> None:
        if self._chunks is None:
            return
        self._progress.advance(self._chunks, chunks)
        speed = self._progress.tasks[self._chunks].speed
        self._progress.update(self._chunks, rate=f"{speed:,.0f}/s" if speed else "")
