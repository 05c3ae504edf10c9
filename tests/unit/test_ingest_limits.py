"""Reader limits: metadata nested too deeply and ids too long reject their own row, with file
and line, and leave every other row alone (no RecursionError, no server index error)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from embedplat.errors import InputProblem
from embedplat.ingest import (
    MAX_ID_BYTES,
    MAX_METADATA_DEPTH,
    RecordInput,
    read_records,
    records_from_dicts,
    unstorable_characters,
)

REPO = Path(__file__).resolve().parents[2]
GOOD = {"id": "ok", "text": "fine"}


def split(
    items: Iterable[RecordInput | InputProblem],
) -> tuple[list[RecordInput], list[InputProblem]]:
    records: list[RecordInput] = []
    problems: list[InputProblem] = []
    for item in items:
        if isinstance(item, RecordInput):
            records.append(item)
        else:
            problems.append(item)
    return records, problems


def jsonl(path: Path, *rows: dict[str, Any] | str) -> Path:
    """Write rows (dicts as JSON, strings verbatim) one per line."""
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def nested(levels: int) -> dict[str, Any]:
    """A metadata object ``levels`` deep ({"n": {"n": ... {}}}), built without recursion."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def deep_json(levels: int) -> str:
    """``levels`` nested arrays as JSON text (json.dumps itself would recurse)."""
    return "[" * levels + "]" * levels


def test_documented_limits() -> None:
    assert MAX_METADATA_DEPTH == 64 and MAX_ID_BYTES == 1000
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    cli = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for text in (readme, cli):
        assert "1,000 bytes" in text and "64 levels" in text


@pytest.mark.parametrize("levels", [1_500, 100_000])
def test_nesting_past_the_json_parser_rejects_that_line_only(tmp_path: Path, levels: int) -> None:
    assert levels > sys.getrecursionlimit()  # json.loads alone would raise RecursionError
    path = jsonl(
        tmp_path / "deep.jsonl",
        GOOD,
        '{"id": "deep", "text": "x", "metadata": {"d": ' + deep_json(levels) + "}}",
        {"id": "after", "text": "still read"},
    )
    records, problems = split(read_records([path]))
    assert [r.external_id for r in records] == ["ok", "after"]
    (problem,) = problems
    assert (problem.source, problem.line) == (str(path), 2)
    assert problem.reason == (
        "the JSON line is nested too deeply, limit 64 levels of objects and arrays "
        "(MAX_METADATA_DEPTH)"
    )


def test_metadata_depth_limit_is_exact(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "m.jsonl",
        {"id": "at-limit", "text": "x", "metadata": nested(MAX_METADATA_DEPTH)},
        {"id": "over", "text": "x", "metadata": nested(MAX_METADATA_DEPTH + 1)},
        # Arrays count as levels too.
        {"id": "arrays", "text": "x", "metadata": {"a": json.loads(deep_json(64))}},
    )
    records, problems = split(read_records([path]))
    assert [r.external_id for r in records] == ["at-limit"]
    assert [(p.line, p.reason.split(",")[0]) for p in problems] == [
        (2, "metadata is nested too deeply"),
        (3, "metadata is nested too deeply"),
    ]


def test_metadata_fields_are_checked_too(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "f.jsonl", {"id": "a", "text": "x", "extra": nested(80)})
    # Unused fields do not matter; a field kept as metadata does.
    assert split(read_records([path]))[0][0].external_id == "a"
    (problem,) = split(read_records([path], metadata_fields=["extra"]))[1]
    assert problem.line == 1 and "nested too deeply, limit 64" in problem.reason


def test_python_rows_deep_or_cyclic_metadata_are_rejected_without_recursion() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    rows = [
        {"id": "ok", "text": "fine", "metadata": nested(10)},
        {"id": "deep", "text": "x", "metadata": nested(5_000)},
        {"id": "cyclic", "text": "x", "metadata": cyclic},
        {"id": "after", "text": "fine"},
    ]
    records, problems = split(records_from_dicts(rows))
    assert [r.external_id for r in records] == ["ok", "after"]
    assert [(p.line, "nested too deeply" in p.reason) for p in problems] == [(2, True), (3, True)]


def test_id_over_the_limit_rejects_that_row_with_its_line(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "ids.jsonl",
        GOOD,
        {"id": "L" * 3_000, "text": "x"},
        {"id": "a" * MAX_ID_BYTES, "text": "at the limit"},
        {"id": "é" * 501, "text": "1,002 bytes in 501 characters"},
        {"id": "z", "text": "after"},
    )
    records, problems = split(read_records([path]))
    assert [len(r.external_id) for r in records] == [2, MAX_ID_BYTES, 1]
    assert [(p.source, p.line) for p in problems] == [(str(path), 2), (str(path), 4)]
    assert problems[0].reason == (
        "id of 3,000 bytes is over the 1,000-byte limit (MAX_ID_BYTES); "
        "use a shorter key, e.g. a hash of this one"
    )
    assert problems[1].reason.startswith("id of 1,002 bytes")


def test_long_ids_in_csv_and_python_rows(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text(f"id,text\nok,fine\n{'x' * 1_001},too long\n", encoding="utf-8")
    records, problems = split(read_records([path]))
    assert [r.external_id for r in records] == ["ok"]
    assert [(p.line, p.reason.split(" is ")[0]) for p in problems] == [(3, "id of 1,001 bytes")]
    big = 10 ** (MAX_ID_BYTES + 1)  # an integer id is measured as its digits
    records, problems = split(records_from_dicts([{"id": big, "text": "x"}, GOOD]))
    assert [r.external_id for r in records] == ["ok"]
    assert problems == [InputProblem("<python>", 1, problems[0].reason)]
    assert problems[0].reason.startswith("id of 1,002 bytes")


def test_unstorable_characters_walks_without_recursion() -> None:
    value: Any = "fine"
    for _ in range(10_000):
        value = [value]
    assert unstorable_characters(value) is None
    assert unstorable_characters({"k": [1, {"x\x00": 2}]}) == "a NUL character (\\u0000)"
    assert unstorable_characters(["ok", "\ud800"]) == "an unpaired UTF-16 surrogate (e.g. \\ud800)"
    assert unstorable_characters("plain ascii") is None
