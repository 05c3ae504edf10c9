"""Readers: JSON Lines, CSV and text/markdown files (or stdin) -> records.

Readers never raise for a bad row: they yield an :class:`~embedplat.errors.InputProblem` naming
the file and line, and the caller decides (``--on-error fail`` writes nothing from the batch,
``skip`` writes the good rows and lists the bad). They raise
:class:`~embedplat.errors.InvalidInputError` only for unusable arguments (a missing path, an
unknown format, a folder given as JSONL or CSV). Files are streamed line by line, never read
whole (text/markdown files excepted: one record per file, at most ``MAX_RECORD_BYTES``).

Rules shared by every format:

* the id is a non-blank string or an integer (turned into a string), at most ``MAX_ID_BYTES``
  bytes of UTF-8;
* the text is the given text fields, each a string, joined with a blank line (``"\\n\\n"``);
  missing, empty or blank fields are skipped, and a row with none of them is rejected;
* the text is at most ``MAX_RECORD_BYTES`` bytes of UTF-8;
* metadata nests at most ``MAX_METADATA_DEPTH`` levels of objects and arrays (checked without
  recursion; a line nested past the JSON parser's own limit is rejected the same way);
* no NUL character (``\\u0000``) and no unpaired surrogate anywhere (PostgreSQL can store
  neither in ``text`` nor in ``jsonb``);
* duplicate ids within one input are *not* rejected here: both rows are yielded and the upsert
  layer decides.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from embedplat.errors import InputProblem, InvalidInputError

__all__ = [
    "FORMATS",
    "MAX_ID_BYTES",
    "MAX_LINE_BYTES",
    "MAX_METADATA_DEPTH",
    "MAX_RECORD_BYTES",
    "TEXT_SUFFIXES",
    "RecordInput",
    "SkippedFile",
    "detect_format",
    "read_records",
    "records_from_dicts",
    "unstorable_characters",
]

#: The largest record text accepted, in bytes of UTF-8. PostgreSQL could store up to 1 GB, but a
#: record this large is almost certainly a mistake (a whole dump in one field), and chunking it
#: would stall a worker.
MAX_RECORD_BYTES = 8 * 1024 * 1024

#: The longest record id accepted, in bytes of UTF-8 (1,000 ASCII characters). Ids are keys of
#: a btree index, whose entries PostgreSQL caps at about 2,700 bytes: a longer id would fail the
#: whole batch with the server's index error, so it is refused per row here, well below that.
MAX_ID_BYTES = 1000

#: How deeply a record's metadata may nest objects and arrays (the metadata object itself is
#: level 1). Deeper documents are refused per row: parsing or walking them recursively would
#: end in a RecursionError, and no filter can reach that deep (``filters.MAX_FILTER_DEPTH``).
MAX_METADATA_DEPTH = 64

#: A JSON line is rejected unparsed above this size. It is larger than ``MAX_RECORD_BYTES``
#: because escapes (``\\u00e9``) and metadata make a line longer than its text; the cap keeps
#: one runaway line from exhausting memory.
MAX_LINE_BYTES = 8 * MAX_RECORD_BYTES

FORMATS = ("jsonl", "csv", "text")
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    **dict.fromkeys(TEXT_SUFFIXES, "text"),
}
_TITLE_CHARS = 200
_EMPTY = "file is empty: no records"


@dataclass(frozen=True, slots=True)
class RecordInput:
    """One good input row, ready for the upsert.

    ``source`` is the file name, ``"<stdin>"`` or ``"<python>"``; ``line`` is the 1-based line
    where the row starts (the row index for Python dicts), or ``None`` for whole-file records.
    """

    external_id: str
    content: str
    metadata: dict[str, Any]
    source: str
    line: int | None


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file (or hidden folder) that reading a folder left out, and why.

    ``path`` is the folder given joined with the path inside it, as in problems' ``source``.
    """

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Fields:
    """Which fields of a row hold the id, the text and the metadata."""

    id_field: str
    text_fields: tuple[str, ...]
    metadata_fields: tuple[str, ...] | None


# -- public API -------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """The input format implied by ``path``.

    ``.jsonl``/``.ndjson``/``.json`` -> ``jsonl``; ``.csv``/``.tsv`` -> ``csv``;
    ``.txt``/``.md``/``.markdown``/``.rst`` and folders -> ``text``; ``-`` (stdin) -> ``jsonl``.
    Raises :class:`InvalidInputError` for any other extension.
    """
    if str(path) == "-":
        return "jsonl"
    p = Path(path)
    if p.is_dir():
        return "text"
    fmt = _SUFFIX_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InvalidInputError(
            f"{path}: cannot tell the format from the extension {p.suffix or '(none)'!r}; "
            f"pass --format {'|'.join(FORMATS)}"
        )
    return fmt


def read_records(
    paths: Sequence[str | Path],
    *,
    format: str | None = None,
    id_field: str = "id",
    text_fields: Sequence[str] = ("text",),
    metadata_fields: Sequence[str] | None = None,
    stdin: BinaryIO | None = None,
    on_skip: Callable[[SkippedFile], None] | None = None,
) -> Iterator[RecordInput | InputProblem]:
    """Yield records (and problems) from files, folders or ``-`` (stdin), in order.

    ``format`` overrides the extension (see :func:`detect_format`); stdin defaults to JSONL.
    ``metadata_fields=None`` keeps the ``metadata`` object of a JSON row, or every column that is
    neither id nor text of a CSV row; otherwise exactly the named fields that are present.
    Text files become one record each: id = the path relative to the folder given, with ``/``
    separators (a file given by itself: its file name); metadata = ``{"path": the same
    relative path, "title": the first markdown heading, else the first non-empty line, front
    matter skipped, at most 200 characters}``. A folder is walked recursively, in path order;
    files ending in one of ``TEXT_SUFFIXES`` (any case) are read; hidden files and folders
    (name starting with ``.``) and files with other extensions are left out, each reported to
    ``on_skip`` as a :class:`SkippedFile` (a hidden folder once, not its contents).

    Arguments are checked before anything is read: a missing path, an unknown format or
    extension, or a folder given as JSONL/CSV raises :class:`InvalidInputError`.
    """
    if format is not None and format not in FORMATS:
        raise InvalidInputError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    if not paths:
        raise InvalidInputError("no input paths given")
    if not id_field:
        raise InvalidInputError("the id field name must not be empty")
    fields = _fields(id_field, text_fields, metadata_fields)
    # Check every path before reading any, so a typo fails before any work starts.
    plan: list[tuple[str | Path, str]] = []
    for path in paths:
        if str(path) == "-":
            plan.append((path, format or "jsonl"))
            continue
        if not Path(path).exists():
            raise InvalidInputError(f"{path}: no such file or directory")
        if not os.access(path, os.R_OK):
            raise InvalidInputError(f"{path}: cannot read: permission denied")
        fmt = format or detect_format(path)
        if fmt != "text" and Path(path).is_dir():
            raise InvalidInputError(
                f"{path}: is a folder; folders are read as text/markdown files "
                "(leave out --format or pass --format text)"
            )
        plan.append((path, fmt))
    return _read_all(plan, fields, stdin, on_skip)


def records_from_dicts(
    rows: Iterable[Mapping[str, Any]],
    *,
    id_field: str = "id",
    text_fields: Sequence[str] = ("text",),
    metadata_fields: Sequence[str] | None = None,
    source: str = "<python>",
) -> Iterator[RecordInput | InputProblem]:
    """Validate Python mappings (``Platform.ingest``'s input) by the same rules as file rows.

    ``line`` is the 1-based index of the row. Metadata must also be JSON-serialisable.
    """
    fields = _fields(id_field, text_fields, metadata_fields)
    for index, row in enumerate(rows, 1):
        if not isinstance(row, Mapping):
            yield InputProblem(source, index, f"expected a mapping, got {type(row).__name__}")
            continue
        yield _record_from_mapping(row, source, index, fields, from_python=True)


# -- dispatch ---------------------------------------------------------------------------------


def _fields(
    id_field: str, text_fields: Sequence[str], metadata_fields: Sequence[str] | None
) -> _Fields:
    if isinstance(text_fields, str):  # a lone string would be read as one field per letter
        text_fields = (text_fields,)
    if isinstance(metadata_fields, str):
        metadata_fields = (metadata_fields,)
    return _Fields(
        id_field,
        tuple(text_fields) or ("text",),
        None if metadata_fields is None else tuple(metadata_fields),
    )


def _read_all(
    plan: list[tuple[str | Path, str]],
    fields: _Fields,
    stdin: BinaryIO | None,
    on_skip: Callable[[SkippedFile], None] | None,
) -> Iterator[RecordInput | InputProblem]:
    for path, fmt in plan:
        if str(path) == "-":
            stream = stdin if stdin is not None else sys.stdin.buffer
            if fmt == "text":
                yield _text_record(stream.read(MAX_RECORD_BYTES + 1), "<stdin>", "stdin", "-")
            else:
                yield from _read_stream(stream, "<stdin>", fmt, fields, ",")
        elif fmt == "text":
            yield from _read_text_path(Path(path), on_skip)
        else:
            delimiter = "\t" if str(path).lower().endswith(".tsv") else ","
            try:
                file = open(path, "rb")  # noqa: SIM115 - closed by the with below
            except OSError as exc:
                raise InvalidInputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
            with file:
                yield from _read_stream(file, str(path), fmt, fields, delimiter)


def _read_stream(
    stream: BinaryIO, source: str, fmt: str, fields: _Fields, delimiter: str
) -> Iterator[RecordInput | InputProblem]:
    if fmt == "jsonl":
        return _read_jsonl(stream, source, fields)
    return _read_csv(stream, source, fields, delimiter)


# -- JSON Lines -------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and jsonb refuses them.
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400 parses to inf, which jsonb would refuse later
        raise ValueError(f"number {text} is out of range")
    return value


# One decoder for the whole run: json.loads(..., parse_constant=...) would build one per line.
_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float)
_decode = _JSON.decode
_raw_decode = _JSON.raw_decode


def _read_jsonl(
    stream: BinaryIO, source: str, fields: _Fields
) -> Iterator[RecordInput | InputProblem]:
    readline = stream.readline
    limit = MAX_LINE_BYTES + 1  # read at the call, so tests can lower the limit
    number = 0
    seen_any = False
    while True:
        raw = readline(limit)
        if not raw:
            break
        number += 1
        if len(raw) == limit and not raw.endswith(b"\n"):
            size = len(raw) + _skip_rest_of_line(readline)
            item: RecordInput | InputProblem | None = InputProblem(
                source,
                number,
                f"line of {size:,} bytes is over the {MAX_LINE_BYTES:,}-byte line limit "
                f"(a record's text may be at most {MAX_RECORD_BYTES:,} bytes)",
            )
        else:
            # Parsed in a helper so its copies of a long line (text, parsed object) are freed
            # before the next line is read, not held alongside it.
            item = _jsonl_item(raw, source, number, fields)
        del raw
        if item is not None:
            seen_any = True
            yield item
    if not seen_any:
        yield InputProblem(source, None, _EMPTY)


def _jsonl_item(
    raw: bytes, source: str, number: int, fields: _Fields
) -> RecordInput | InputProblem | None:
    """One JSON line -> a record, a problem, or None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InputProblem(source, number, _utf8_reason(exc, "of the line"))
    try:
        obj = _parse_line(text, number)
    except RecursionError:
        # json's decoder recurses once per level and gives up near 1,000 levels: this row only.
        return InputProblem(source, number, _too_deep("the JSON line"))
    except ValueError as exc:
        return InputProblem(source, number, _json_reason(exc))
    if obj is _BLANK:
        return None
    if type(obj) is not dict:
        return InputProblem(source, number, f"expected a JSON object, got {_type_name(obj)}")
    # A NUL or an unpaired surrogate can only come from a \u escape: look only then.
    return _record_from_mapping(obj, source, number, fields, check_chars=b"\\u" in raw)


_BLANK = object()


def _parse_line(text: str, number: int) -> Any:
    """The JSON value of a line, or ``_BLANK`` for a blank one; raises ValueError (and
    RecursionError, for nesting past json's limit)."""
    try:
        obj, end = _raw_decode(text)
        if end < len(text) - 1:  # "\r\n", trailing spaces or extra data: decode() judges
            obj = _decode(text)
        return obj
    except ValueError:
        # The rare paths (blank line, byte-order mark, leading spaces) cost nothing on good
        # lines; decode() gives the canonical error.
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            return _BLANK
        return _decode(text)


def _skip_rest_of_line(readline: Callable[[int], bytes]) -> int:
    skipped = 0
    while True:
        chunk = readline(1024 * 1024)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _json_reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON at column {exc.colno}: {exc.msg}"
    return f"malformed JSON: {exc}"


def _utf8_reason(exc: UnicodeDecodeError, where: str) -> str:
    bad = exc.object[exc.start : exc.start + 4]
    return (
        f"not valid UTF-8: byte {exc.start} {where} ({bytes(bad)!r}); re-encode the file as UTF-8"
    )


# -- CSV / TSV --------------------------------------------------------------------------------


class _CsvLines:
    """Physical lines of a CSV stream, decoded one by one.

    Decoding per line (rather than through a TextIOWrapper, which decodes 8 KB chunks) lets a
    bad byte be reported at its own line; the line is still passed on (with surrogate escapes)
    so the CSV parser stays in step and the row it belongs to is rejected.
    """

    __slots__ = ("bad_utf8", "count", "has_nul", "stream")

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.count = 0
        self.bad_utf8: list[tuple[int, UnicodeDecodeError]] = []
        self.has_nul: list[int] = []

    def __iter__(self) -> Iterator[str]:
        for raw in self.stream:
            self.count += 1
            if self.count == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.bad_utf8.append((self.count, exc))
                text = raw.decode("utf-8", "surrogateescape")
            if b"\x00" in raw:
                self.has_nul.append(self.count)
            yield text


def _read_csv(
    stream: BinaryIO, source: str, fields: _Fields, delimiter: str
) -> Iterator[RecordInput | InputProblem]:
    # Read huge fields whole, so the size rule rejects them with a clear reason instead of the
    # csv module failing with "field larger than field limit". The setting is process-wide.
    csv.field_size_limit(2**31 - 1)
    lines = _CsvLines(stream)
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] | None = None
    while header is None:
        try:
            row = next(reader)
        except StopIteration:
            yield InputProblem(source, None, _EMPTY)
            return
        except csv.Error as exc:
            yield InputProblem(source, reader.line_num, f"malformed CSV header: {exc}")
            return
        if lines.bad_utf8:
            number, error = lines.bad_utf8[0]
            yield InputProblem(source, number, _utf8_reason(error, "of the header line"))
            return
        if row and any(v.strip() for v in row):
            header = [name.strip() for name in row]
    header_line = reader.line_num
    problem = _check_header(header, fields)
    if problem:
        yield InputProblem(source, header_line, problem)
        return
    width = len(header)
    if fields.metadata_fields is None:
        # A CSV cannot nest objects: by default every column that is not id or text is metadata.
        meta = tuple(h for h in header if h != fields.id_field and h not in fields.text_fields)
        row_fields = _Fields(fields.id_field, fields.text_fields, meta)
    else:
        row_fields = fields
    seen_any = False
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            seen_any = True
            yield InputProblem(source, start, f"malformed CSV: {exc}")
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not values or (len(values) == 1 and not values[0].strip()):
            continue  # blank line
        seen_any = True
        if lines.bad_utf8 and lines.bad_utf8[-1][0] >= line:
            number, error = next((n, e) for n, e in lines.bad_utf8 if n >= line)
            yield InputProblem(source, line, _utf8_reason(error, f"of line {number}"))
            continue
        if len(values) != width:
            yield InputProblem(
                source, line, f"expected {width} columns as in the header, got {len(values)}"
            )
            continue
        check = bool(lines.has_nul) and lines.has_nul[-1] >= line
        row_map = dict(zip(header, values, strict=True))
        yield _record_from_mapping(row_map, source, line, row_fields, check_chars=check)
    if not seen_any:
        yield InputProblem(source, None, _EMPTY)


def _check_header(header: list[str], fields: _Fields) -> str | None:
    columns = ", ".join(header)
    if fields.id_field not in header:
        return (
            f"the header has no id column {fields.id_field!r} (columns: {columns}); pass --id-field"
        )
    if not any(f in header for f in fields.text_fields):
        names = ", ".join(map(repr, fields.text_fields))
        return f"the header has no text column {names} (columns: {columns}); pass --text-field"
    return None


# -- text / markdown files --------------------------------------------------------------------


_NOT_TEXT = f"not a text file (reads {', '.join(TEXT_SUFFIXES)})"


def _read_text_path(
    path: Path, on_skip: Callable[[SkippedFile], None] | None = None
) -> Iterator[RecordInput | InputProblem]:
    if not path.is_dir():
        yield _text_file_record(path, path.name)
        return
    files: list[tuple[str, Path]] = []
    skipped: list[SkippedFile] = []
    for folder, dirnames, filenames in os.walk(path):
        # Hidden folders (.git, .venv, ...) are pruned, not walked and then filtered.
        hidden = [d for d in dirnames if d.startswith(".")]
        skipped += (SkippedFile(str(Path(folder, d)), "hidden folder") for d in hidden)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                skipped.append(SkippedFile(str(Path(folder, name)), "hidden file"))
                continue
            if not name.lower().endswith(TEXT_SUFFIXES):
                skipped.append(SkippedFile(str(Path(folder, name)), _NOT_TEXT))
                continue
            file = Path(folder, name)
            files.append((file.relative_to(path).as_posix(), file))
    if on_skip is not None:
        for item in sorted(skipped, key=lambda item: item.path):
            on_skip(item)
    if not files:
        yield InputProblem(
            str(path), None, f"no {', '.join(TEXT_SUFFIXES)} files in this folder: no records"
        )
        return
    files.sort()  # by relative path, so ids come out in the same order on every machine
    for relative, file in files:
        yield _text_file_record(file, relative)


def _text_file_record(file: Path, relative: str) -> RecordInput | InputProblem:
    source = str(file)
    try:
        size = file.stat().st_size
        if size > MAX_RECORD_BYTES:  # checked before reading, so a huge file is never loaded
            return InputProblem(source, None, _too_big(size))
        data = file.read_bytes()
    except OSError as exc:
        return InputProblem(source, None, f"cannot read: {exc.strerror or exc}")
    return _text_record(data, source, relative, relative)


def _text_record(
    data: bytes, source: str, external_id: str, path: str
) -> RecordInput | InputProblem:
    if len(data) > MAX_RECORD_BYTES:
        return InputProblem(source, None, _too_big(len(data), at_least=True))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return InputProblem(source, None, _utf8_reason(exc, f"(line {line})"))
    text = text.removeprefix("\ufeff")
    if not text or text.isspace():
        return InputProblem(source, None, _EMPTY)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        return InputProblem(
            source, None, f"contains a NUL character (line {line}); PostgreSQL cannot store it"
        )
    return RecordInput(external_id, text, {"path": path, "title": _title(text)}, source, None)


def _title(text: str) -> str:
    """The first markdown heading, else the first non-empty line (front matter skipped)."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":  # YAML front matter
        end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
        if end is not None:
            lines = lines[end + 1 :]
    first = ""
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            heading = stripped.lstrip("#")
            if not heading or heading[0] in " \t":
                heading = heading.strip().rstrip("#").strip()
                if heading:
                    return heading[:_TITLE_CHARS]
        first = first or stripped
    return first[:_TITLE_CHARS]


# -- validation shared by every format --------------------------------------------------------


def _record_from_mapping(
    row: Mapping[str, Any],
    source: str,
    line: int,
    fields: _Fields,
    *,
    check_chars: bool = False,
    from_python: bool = False,
) -> RecordInput | InputProblem:
    """One row -> a record or a problem.

    ``check_chars`` looks for NUL and unpaired surrogates everywhere; file readers ask for it
    only when the raw line could hold one. ``from_python`` rows always get every check, since
    Python values can hold anything.
    """
    id_field = fields.id_field
    raw_id = row.get(id_field)
    if isinstance(raw_id, str):
        external_id = raw_id
    elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
        external_id = str(raw_id)
    elif raw_id is None:
        return InputProblem(source, line, f"missing id field {id_field!r}")
    else:
        return InputProblem(
            source,
            line,
            f"id field {id_field!r} must be a string or an integer, got {_type_name(raw_id)}",
        )
    if not external_id or external_id.isspace():
        return InputProblem(source, line, f"missing id field {id_field!r} (the value is blank)")
    if len(external_id) * 4 > MAX_ID_BYTES:  # up to 4 bytes a character: measure long ones
        id_bytes = len(external_id.encode("utf-8", "surrogatepass"))
        if id_bytes > MAX_ID_BYTES:
            return InputProblem(
                source,
                line,
                f"id of {id_bytes:,} bytes is over the {MAX_ID_BYTES:,}-byte limit "
                "(MAX_ID_BYTES); use a shorter key, e.g. a hash of this one",
            )

    text_fields = fields.text_fields
    if len(text_fields) == 1:  # the common case, without building a list
        value = row.get(text_fields[0])
        if isinstance(value, str) and value and not value.isspace():
            content = value
        elif value is None or isinstance(value, str):
            return InputProblem(source, line, _missing_text(text_fields))
        else:
            return InputProblem(source, line, _text_type(text_fields[0], value))
    else:
        parts: list[str] = []
        for field in text_fields:
            value = row.get(field)
            if value is None:
                continue
            if not isinstance(value, str):
                return InputProblem(source, line, _text_type(field, value))
            if value and not value.isspace():
                parts.append(value)
        if not parts:
            return InputProblem(source, line, _missing_text(text_fields))
        content = "\n\n".join(parts)
    # Up to 4 bytes per character: only long texts need encoding to be measured.
    if len(content) * 4 > MAX_RECORD_BYTES:
        # isascii() is O(1) in CPython: a long ASCII text needs no encoded copy to be measured.
        size = len(content) if content.isascii() else len(content.encode("utf-8", "surrogatepass"))
        if size > MAX_RECORD_BYTES:
            return InputProblem(source, line, _too_big(size))

    metadata: Any
    if fields.metadata_fields is None:
        metadata = row.get("metadata")
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict) and not (from_python and isinstance(metadata, Mapping)):
            return InputProblem(
                source,
                line,
                f"metadata must be a JSON object, got {_type_name(metadata)}",
            )
        elif from_python:
            metadata = dict(metadata)  # do not alias the caller's dict
    else:
        metadata = {f: row[f] for f in fields.metadata_fields if f in row}
    if metadata and not _within_depth(metadata):
        return InputProblem(source, line, _too_deep("metadata"))

    if check_chars or from_python:
        for what, value in (("id", external_id), ("text", content), ("metadata", metadata)):
            bad = unstorable_characters(value)
            if bad:
                return InputProblem(
                    source, line, f"{what} contains {bad}, which PostgreSQL cannot store"
                )
    if from_python and metadata:
        try:
            json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return InputProblem(source, line, f"metadata is not JSON-serialisable: {exc}")
    return RecordInput(external_id, content, metadata, source, line)


def unstorable_characters(value: Any) -> str | None:
    """What makes ``value`` (a string, or a JSON-like document of them) unstorable in
    PostgreSQL ``text``/``jsonb``: ``"a NUL character (\\u0000)"``, ``"an unpaired UTF-16
    surrogate (e.g. \\ud800)"``, or None when nothing does.

    Walked without recursion; callers bound the depth first (:data:`MAX_METADATA_DEPTH`).
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "a NUL character (\\u0000)"
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return "an unpaired UTF-16 surrogate (e.g. \\ud800)"
        elif isinstance(item, Mapping):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return None


def _within_depth(value: Any) -> bool:
    """Whether ``value`` nests at most :data:`MAX_METADATA_DEPTH` levels of objects and arrays
    (without recursion, and without going round a Python object that contains itself)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_METADATA_DEPTH:
            return False
        children = item.values() if isinstance(item, Mapping) else item
        pending.extend(
            (child, depth + 1) for child in children if isinstance(child, (Mapping, list, tuple))
        )
    return True


def _too_deep(what: str) -> str:
    return (
        f"{what} is nested too deeply, limit {MAX_METADATA_DEPTH} levels of objects and arrays "
        "(MAX_METADATA_DEPTH)"
    )


def _missing_text(text_fields: tuple[str, ...]) -> str:
    plural = "s" if len(text_fields) > 1 else ""
    names = ", ".join(map(repr, text_fields))
    return f"missing text field{plural} {names} (absent, empty or blank)"


def _text_type(field: str, value: Any) -> str:
    return f"text field {field!r} must be a string, got {_type_name(value)}"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _too_big(size: int, *, at_least: bool = False) -> str:
    amount = f"more than {MAX_RECORD_BYTES:,}" if at_least else f"{size:,}"
    return (
        f"record of {amount} bytes is over the {MAX_RECORD_BYTES:,}-byte limit "
        "(MAX_RECORD_BYTES); split it into several records"
    )
