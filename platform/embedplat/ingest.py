"""Readers: JSON Lines, CSV and text/markdown files (or stdin) -> records.

Readers never raise for a bad row: they yield an :class:`~embedplat.errors.InputProblem` naming
the file and line, and the caller decides (``--on-error fail`` writes nothing from the batch,
``skip`` writes the good rows and lists the bad). They raise
:class:`~embedplat.errors.InvalidInputError` only for unusable arguments (a missing path, an
unknown format). Files are streamed line by line, never read whole (text files excepted: one
record per file).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from embedplat.errors import InputProblem, InvalidInputError

# PostgreSQL stores up to 1 GB per text value, but a record this large is almost certainly a
# mistake (a whole dump in one field), and chunking it would stall a worker. Documented limit.
MAX_RECORD_BYTES = 8 * 1024 * 1024

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
_FORMATS = ("jsonl", "csv", "text")
_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    **{suffix: "text" for suffix in TEXT_SUFFIXES},
}

@dataclass(frozen=True, slots=True)
class RecordInput:
    """One good input row."""

    external_id: str
    content: str
    metadata: dict[str, Any]
    source: str
    line: int | None


def detect_format(path: str | Path) -> str:
    """The input format implied by a path: its extension, ``text`` for folders, jsonl for -."""
    if str(path) == "-":
        return "jsonl"
    p = Path(path)
    if p.is_dir():
        return "text"
    fmt = _SUFFIX_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InvalidInputError(
            f"{path}: cannot tell the format from the extension {p.suffix or '(none)'}; "
            "pass --format jsonl|csv|text"
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
) -> Iterator[RecordInput | InputProblem]:
    """Yield records (and problems) from files, folders or ``-`` (stdin), in order."""
    if format is not None and format not in _FORMATS:
        raise InvalidInputError(f"unknown format {format!r}; use one of {', '.join(_FORMATS)}")
    if not paths:
        raise InvalidInputError("no input paths given")
    text_fields = tuple(text_fields) or ("text",)
    # Check every path before reading any, so a typo fails before work starts.
    for path in paths:
        if str(path) != "-" and not Path(path).exists():
            raise InvalidInputError(f"{path}: no such file or directory")
        if format is None:
            detect_format(path)
    for path in paths:
        fmt = format or detect_format(path)
        if str(path) == "-":
            stream = stdin if stdin is not None else sys.stdin.buffer
            yield from _read_stream(
                stream, "<stdin>", fmt, id_field, text_fields, metadata_fields, path
            )
        elif fmt == "text":
            yield from _read_text_files(Path(path))
        else:
            with open(path, "rb") as stream:
                yield from _read_stream(
                    stream, str(path), fmt, id_field, text_fields, metadata_fields, path
                )


def records_from_dicts(
    rows: Iterable[Mapping[str, Any]],
    *,
    id_field: str = "id",
    text_fields: Sequence[str] = ("text",),
    metadata_fields: Sequence[str] | None = None,
    source: str = "<python>",
) -> Iterator[RecordInput | InputProblem]:
    """Validate dicts (``Platform.ingest``'s input) the same way as file rows; line = 1-based index."""
    for index, row in enumerate(rows, 1):
        if not isinstance(row, Mapping):
            yield InputProblem(source, index, f"expected a mapping, got {type(row).__name__}")
            continue
        yield _record_from_mapping(
            row, source, index, id_field, tuple(text_fields), metadata_fields
        )


# -- streams ----------------------------------------------------------------------------------


def _read_stream(
    stream: BinaryIO,
    source: str,
    fmt: str,
    id_field: str,
    text_fields: tuple[str, ...],
    metadata_fields: Sequence[str] | None,
    path: str | Path,
) -> Iterator[RecordInput | InputProblem]:
    if fmt == "jsonl":
        yield from _read_jsonl(stream, source, id_field, text_fields, metadata_fields)
    elif fmt == "csv":
        delimiter = "\t" if str(path).lower().endswith(".tsv") else ","
        yield from _read_csv(stream, source, id_field, text_fields, metadata_fields, delimiter)
    else:  # text from stdin: the whole stream is one record
        data = stream.read()
        yield from _text_record(data, source, "stdin")


def _read_jsonl(
    stream: BinaryIO,
    source: str,
    id_field: str,
    text_fields: tuple[str, ...],
    metadata_fields: Sequence[str] | None,
) -> Iterator[RecordInput | InputProblem]:
    seen_any = False
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        seen_any = True
        if len(raw) > MAX_RECORD_BYTES + 4096:
            yield InputProblem(
                source, number, f"line of {len(raw):,} bytes exceeds the {MAX_RECORD_BYTES:,}-byte record limit"
            )
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield InputProblem(source, number, f"not valid UTF-8 (byte {exc.start})")
            continue
        try:
            obj = json.loads(line, parse_constant=_reject_constant)
        except ValueError as exc:
            yield InputProblem(source, number, f"malformed JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            yield InputProblem(source, number, f"expected a JSON object, got {type(obj).__name__}")
            continue
        # JSON cannot carry a raw NUL byte, only the escape: skip the NUL scan when it is absent.
        yield _record_from_mapping(
            obj, source, number, id_field, text_fields, metadata_fields, b"\\u0000" in raw
        )
    if not seen_any:
        yield InputProblem(source, None, "file is empty: no records")


def _read_csv(
    stream: BinaryIO,
    source: str,
    id_field: str,
    text_fields: tuple[str, ...],
    metadata_fields: Sequence[str] | None,
    delimiter: str,
) -> Iterator[RecordInput | InputProblem]:
    csv.field_size_limit(2**31 - 1)  # read huge fields, then reject them by the size rule
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="strict", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        yield InputProblem(source, None, "file is empty: no records")
        return
    except UnicodeDecodeError as exc:
        yield InputProblem(source, 1, f"not valid UTF-8 (byte {exc.start})")
        return
    except csv.Error as exc:
        yield InputProblem(source, 1, f"malformed CSV header: {exc}")
        return
    header = [h.strip() for h in header]
    if metadata_fields is None:
        # CSV has no nested objects: by default keep every column that is not id or text.
        wanted_meta: Sequence[str] = [h for h in header if h != id_field and h not in text_fields]
    else:
        wanted_meta = metadata_fields
    seen_any = False
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except UnicodeDecodeError as exc:
            yield InputProblem(source, start, f"not valid UTF-8 (byte {exc.start}); rest of file skipped")
            return
        except csv.Error as exc:
            yield InputProblem(source, start, f"malformed CSV: {exc}")
            start = reader.line_num + 1
            continue
        line = start
        start = reader.line_num + 1
        if not values or all(not v.strip() for v in values):
            continue
        seen_any = True
        if len(values) != len(header):
            yield InputProblem(
                source, line, f"expected {len(header)} columns as in the header, got {len(values)}"
            )
            continue
        row = dict(zip(header, values, strict=True))
        yield _record_from_mapping(row, source, line, id_field, text_fields, wanted_meta)
    if not seen_any:
        yield InputProblem(source, None, "file is empty: no records")


# -- text files -------------------------------------------------------------------------------


def _read_text_files(path: Path) -> Iterator[RecordInput | InputProblem]:
    if path.is_file():
        yield from _text_record(path.read_bytes(), str(path), path.name)
        return
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in TEXT_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        yield InputProblem(str(path), None, f"no {', '.join(TEXT_SUFFIXES)} files in this folder")
    for file in files:
        yield from _text_record(file.read_bytes(), str(file), file.relative_to(path).as_posix())


def _text_record(data: bytes, source: str, external_id: str) -> Iterator[RecordInput | InputProblem]:
    if len(data) > MAX_RECORD_BYTES:
        yield InputProblem(
            source, None, f"{len(data):,} bytes exceeds the {MAX_RECORD_BYTES:,}-byte record limit"
        )
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        yield InputProblem(source, line, f"not valid UTF-8 (byte {exc.start})")
        return
    if not text.strip():
        yield InputProblem(source, None, "file is empty: no records")
        return
    if "\x00" in text:
        yield InputProblem(source, text[: text.index("\x00")].count("\n") + 1, "contains a NUL character")
        return
    yield RecordInput(
        external_id, text, {"path": external_id, "title": _title(text)}, source, None
    )


def _title(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped:
            return stripped[:200]
    return ""


# -- validation shared by every format --------------------------------------------------------


def _record_from_mapping(
    row: Mapping[str, Any],
    source: str,
    line: int,
    id_field: str,
    text_fields: tuple[str, ...],
    metadata_fields: Sequence[str] | None,
    may_contain_nul: bool = True,
) -> RecordInput | InputProblem:
    raw_id = row.get(id_field)
    if raw_id is None or raw_id == "":
        return InputProblem(source, line, f"missing id field {id_field!r}")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return InputProblem(
            source, line, f"id field {id_field!r} must be a string or an integer, got {type(raw_id).__name__}"
        )
    external_id = str(raw_id)
    if may_contain_nul and "\x00" in external_id:
        return InputProblem(source, line, "id contains a NUL character")

    parts: list[str] = []
    for field in text_fields:
        value = row.get(field)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            return InputProblem(
                source, line, f"text field {field!r} must be a string, got {type(value).__name__}"
            )
        parts.append(value)
    if not parts:
        return InputProblem(
            source, line, f"missing text field{'s' if len(text_fields) > 1 else ''} {', '.join(map(repr, text_fields))}"
        )
    content = parts[0] if len(parts) == 1 else "\n\n".join(parts)
    if may_contain_nul and "\x00" in content:
        return InputProblem(source, line, "text contains a NUL character (PostgreSQL cannot store it)")
    # A character is at most 4 UTF-8 bytes: only long texts need the exact byte count.
    if len(content) * 4 > MAX_RECORD_BYTES and len(content.encode("utf-8")) > MAX_RECORD_BYTES:
        return InputProblem(
            source, line, f"text exceeds the {MAX_RECORD_BYTES:,}-byte record limit"
        )

    if metadata_fields is None:
        metadata = row.get("metadata", {})
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            return InputProblem(
                source, line, f"metadata must be a JSON object, got {type(metadata).__name__}"
            )
    else:
        metadata = {f: row[f] for f in metadata_fields if f in row}
    if may_contain_nul and metadata and _has_nul(metadata):
        return InputProblem(source, line, "metadata contains a NUL character (PostgreSQL cannot store it)")
    return RecordInput(external_id, content, dict(metadata), source, line)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON and jsonb refuses them.
    raise ValueError(f"{name} is not valid JSON")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False
