"""What commands print: JSON for scripts, result lines, rich progress on terminals (stderr).

User text (collection names, ids, chunk text, metadata, error messages) reaches the terminal
only through :func:`shown` (or JSON escapes, :func:`json_line`) and reaches rich only as
:class:`rich.text.Text` or with ``markup=False``: a name like ``[/bold]`` is not markup, and a
newline, ESC or U+202E in an id can neither break a line, drive the terminal, nor reorder
what follows it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from embedplat.search import SearchHit

__all__ = [
    "PrintableWriter",
    "SyncBar",
    "bar",
    "counter",
    "json_line",
    "print_hits",
    "print_json",
    "shown",
]


def shown(value: object) -> str:
    """``value`` as text with every non-printable character written as a Python escape.

    Newline, tab, ESC, bidi controls such as U+202E and lone surrogates become ``\\n``,
    ``\\t``, ``\\x1b``, ``\\u202e``, ``\\udcff`` (as ``repr`` writes them); everything
    printable, accented letters and other scripts included, stays as it is.
    """
    text = str(value)
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def json_line(value: Any) -> str:
    """``value`` as one line of JSON: UTF-8 as is, except non-printable characters, which
    become ``\\uXXXX`` escapes (the same JSON, safe on a terminal)."""
    return _printable_json(json.dumps(value, ensure_ascii=False, default=str))


def print_json(value: Any) -> None:
    """One JSON document on one line (see :func:`json_line`; dates and paths as strings)."""
    typer.echo(json_line(value))


class PrintableWriter:
    """A text stream for JSON Lines that writes non-printable characters as JSON escapes.

    Only for JSON: there such a character can only stand inside a string, where its escape
    means the same (json escapes line breaks itself, so a bare ``\\n`` ends a line).
    """

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def write(self, text: str) -> int:
        return self._out.write(_printable_json(text))

    def flush(self) -> None:
        self._out.flush()


def _printable_json(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else _json_escape(c) for c in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code > 0xFFFF:  # outside the BMP: a UTF-16 surrogate pair, as JSON spells it
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def print_hits(hits: Sequence[SearchHit], *, indent: str = "") -> None:
    """Search hits as ``rank. similarity  id  snippet`` lines."""
    if not hits:
        typer.echo(f"{indent}(no results)")
    for rank, hit in enumerate(hits, 1):
        snippet = " ".join(hit.chunk.split())[:100]
        typer.echo(f"{rank:>3}. {hit.score:.3f}  {shown(hit.id)}  {shown(snippet)}")


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
        TextColumn("{task.description}", markup=False),
        TextColumn("{task.completed:,.0f} " + unit, markup=False),
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
        TextColumn("{task.description}", markup=False),
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
            # Descriptions hold collection names: never markup.
            TextColumn("{task.description:<22}", markup=False),
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
            f"{shown(collection)}: chunk records", total=records, rate=""
        )
        self._chunks = self._progress.add_task(
            f"{shown(collection)}: embed chunks", total=chunks, rate=""
        )

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
