"""File readers: every format, field options, stdin, and every kind of bad input (no database)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from embedplat import ingest
from embedplat.errors import InputProblem, InvalidInputError
from embedplat.ingest import (
    MAX_RECORD_BYTES,
    RecordInput,
    detect_format,
    read_records,
    records_from_dicts,
)

REPO = Path(__file__).resolve().parents[2]


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


def jsonl(path: Path, *rows: dict[str, Any] | str | bytes) -> Path:
    """Write rows (dicts as JSON, str/bytes verbatim) one per line."""
    with path.open("wb") as fh:
        for row in rows:
            if isinstance(row, dict):
                fh.write(json.dumps(row).encode() + b"\n")
            elif isinstance(row, str):
                fh.write(row.encode() + b"\n")
            else:
                fh.write(row + b"\n")
    return path


def only_problem(path: Path, **options: Any) -> InputProblem:
    """Read ``path`` expecting exactly one good record before one problem on line 2."""
    records, problems = split(read_records([path], **options))
    assert [r.external_id for r in records] == ["ok"]
    assert len(problems) == 1, problems
    return problems[0]


GOOD = {"id": "ok", "text": "fine"}


# -- format detection and arguments ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("a.NDJSON", "jsonl"),
        ("a.json", "jsonl"),
        ("a.csv", "csv"),
        ("a.tsv", "csv"),
        ("a.txt", "text"),
        ("a.md", "text"),
        ("a.markdown", "text"),
        ("a.rst", "text"),
    ],
)
def test_detect_format_by_extension(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


def test_detect_format_folder_and_stdin(tmp_path: Path) -> None:
    assert detect_format(tmp_path) == "text"
    assert detect_format("-") == "jsonl"


def test_unknown_extension_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "data.xml"
    path.write_text("<x/>")
    with pytest.raises(InvalidInputError, match=r"data\.xml.*--format"):
        read_records([path])
    # An explicit format overrides the extension.
    path.write_text(json.dumps(GOOD))
    assert split(read_records([path], format="jsonl"))[0][0].external_id == "ok"


def test_missing_path_raises_before_reading_anything(tmp_path: Path) -> None:
    good = jsonl(tmp_path / "good.jsonl", GOOD)
    with pytest.raises(InvalidInputError, match=r"nope\.jsonl: no such file"):
        read_records([good, tmp_path / "nope.jsonl"])


def test_unknown_format_and_folder_as_jsonl_raise(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="unknown format 'xml'"):
        read_records([tmp_path], format="xml")
    with pytest.raises(InvalidInputError, match=r"is a folder"):
        read_records([tmp_path], format="jsonl")
    with pytest.raises(InvalidInputError, match="no input paths"):
        read_records([])


# -- JSON Lines -----------------------------------------------------------------------------


def test_jsonl_records_ids_metadata_and_lines(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "in.jsonl",
        {"id": "a", "text": "alpha", "metadata": {"topic": "x", "n": [1, 2]}},
        "",
        "   ",
        {"id": 7, "text": "seven"},
        {"id": "c", "text": "gamma", "metadata": None},
    )
    records, problems = split(read_records([path]))
    assert problems == []
    assert records == [
        RecordInput("a", "alpha", {"topic": "x", "n": [1, 2]}, str(path), 1),
        RecordInput("7", "seven", {}, str(path), 4),
        RecordInput("c", "gamma", {}, str(path), 5),
    ]


def test_jsonl_crlf_bom_and_no_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "win.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n" + b' {"id": "b", "text": "t"} '
    )
    records, problems = split(read_records([path]))
    assert problems == []
    assert [(r.external_id, r.line) for r in records] == [("ok", 1), ("b", 2)]


def test_repeated_text_fields_are_joined_with_a_blank_line(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "in.jsonl",
        {"id": "both", "title": "Title", "body": "Body"},
        {"id": "no-title", "body": "Only body"},
        {"id": "empty-title", "title": "", "body": "Body two"},
        {"id": "blank-body", "title": "Only title", "body": "  \n"},
        {"id": "none", "other": "x"},
    )
    records, problems = split(read_records([path], text_fields=["title", "body"]))
    assert {r.external_id: r.content for r in records} == {
        "both": "Title\n\nBody",
        "no-title": "Only body",
        "empty-title": "Body two",
        "blank-body": "Only title",
    }
    assert [(p.line, p.reason) for p in problems] == [
        (5, "missing text fields 'title', 'body' (absent, empty or blank)")
    ]


def test_metadata_fields_pick_top_level_fields(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "in.jsonl",
        {"id": "x", "text": "t", "lang": "en", "n": 3, "skip": 1, "metadata": {"a": 1}},
        {"id": "y", "text": "t", "lang": None},
    )
    records, _ = split(read_records([path], metadata_fields=["lang", "n"]))
    assert [r.metadata for r in records] == [{"lang": "en", "n": 3}, {"lang": None}]


def test_custom_id_field(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "in.jsonl", {"key": "k1", "text": "t"}, {"id": "i", "text": "t"})
    records, problems = split(read_records([path], id_field="key"))
    assert [r.external_id for r in records] == ["k1"]
    assert problems == [InputProblem(str(path), 2, "missing id field 'key'")]


def test_duplicate_ids_are_both_yielded(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "in.jsonl", {"id": "d", "text": "one"}, {"id": "d", "text": "two"})
    records, _ = split(read_records([path]))
    assert [(r.external_id, r.content) for r in records] == [("d", "one"), ("d", "two")]


def test_several_paths_are_read_in_order(tmp_path: Path) -> None:
    first = jsonl(tmp_path / "1.jsonl", {"id": "a", "text": "t"})
    second = tmp_path / "2.csv"
    second.write_text("id,text\nb,t\n")
    records, _ = split(read_records([first, second]))
    assert [(r.external_id, r.source) for r in records] == [("a", str(first)), ("b", str(second))]


# -- bad JSON Lines input: every problem names the file and the line -------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"id": "bad", "text": ', "malformed JSON"),
        (b"not json at all", "malformed JSON"),
        (b'{"id": "a", "text": "t"} {"id": "b"}', "malformed JSON"),
        (b'{"id": "a", "text": NaN}', "NaN is not valid JSON"),
        (b'{"id": "a", "text": "t", "metadata": {"x": 1e400}}', "out of range"),
        (b'["id", "text"]', "expected a JSON object, got an array"),
        (b'"just a string"', "expected a JSON object, got a string"),
        (b"null", "expected a JSON object, got null"),
        (b'{"text": "no id"}', "missing id field 'id'"),
        (b'{"id": null, "text": "t"}', "missing id field 'id'"),
        (b'{"id": "", "text": "t"}', "missing id field 'id'"),
        (b'{"id": "  ", "text": "t"}', "missing id field 'id'"),
        (b'{"id": 1.5, "text": "t"}', "must be a string or an integer, got a number (1.5)"),
        (b'{"id": true, "text": "t"}', "must be a string or an integer, got a boolean"),
        (b'{"id": ["a"], "text": "t"}', "must be a string or an integer, got an array"),
        (b'{"id": "x"}', "missing text field 'text'"),
        (b'{"id": "x", "text": ""}', "missing text field 'text'"),
        (b'{"id": "x", "text": 42}', "text field 'text' must be a string, got a number"),
        (b'{"id": "x", "text": ["a"]}', "text field 'text' must be a string, got an array"),
        (b'{"id": "x", "text": "t", "metadata": [1]}', "metadata must be a JSON object"),
        (b'{"id": "x", "text": "t", "metadata": "s"}', "metadata must be a JSON object"),
        (b'{"id": "x", "text": "caf\xe9"}', "not valid UTF-8"),
        (b'{"id": "x", "text": "\xff\xfe"}', "not valid UTF-8"),
        (b'{"id": "a\\u0000b", "text": "t"}', "id contains a NUL character"),
        (b'{"id": "x", "text": "a\\u0000b"}', "text contains a NUL character"),
        (b'{"id": "x", "text": "t", "metadata": {"k": "\\u0000"}}', "metadata contains a NUL"),
        (b'{"id": "x", "text": "t", "metadata": {"k\\u0000": 1}}', "metadata contains a NUL"),
        (b'{"id": "x", "text": "t", "metadata": {"k": ["\\u0000"]}}', "metadata contains a NUL"),
        (b'{"id": "x", "text": "a\\ud800b"}', "text contains an unpaired UTF-16 surrogate"),
    ],
)
def test_bad_jsonl_line_is_a_problem_at_its_line(tmp_path: Path, line: bytes, reason: str) -> None:
    path = jsonl(tmp_path / "bad.jsonl", GOOD, line, {"id": "after", "text": "still read"})
    records, problems = split(read_records([path]))
    assert [r.external_id for r in records] == ["ok", "after"]
    assert len(problems) == 1
    assert (problems[0].source, problems[0].line) == (str(path), 2)
    assert reason in problems[0].reason
    assert str(problems[0]).startswith(f"{path}:2: ")


def test_escaped_non_ascii_is_fine(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "ok.jsonl", b'{"id": "\\u00e9", "text": "caf\\u00e9 \\ud83d\\ude00"}')
    records, problems = split(read_records([path]))
    assert problems == []
    assert (records[0].external_id, records[0].content) == ("\u00e9", "caf\u00e9 \U0001f600")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf\n"])
def test_empty_jsonl_file_is_one_problem(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    assert list(read_records([path])) == [
        InputProblem(str(path), None, "file is empty: no records")
    ]


def test_record_over_the_size_limit_is_rejected_alone(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    size = 50 * 1024 * 1024
    with path.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(GOOD) + "\n")
        fh.write('{"id": "huge", "text": "' + "x" * size + '"}\n')
        fh.write(json.dumps({"id": "after", "text": "fine"}) + "\n")
    records, problems = split(read_records([path]))
    assert [r.external_id for r in records] == ["ok", "after"]
    assert [(p.source, p.line) for p in problems] == [(str(path), 2)]
    assert f"{size:,} bytes is over the {MAX_RECORD_BYTES:,}-byte limit" in problems[0].reason


def test_multibyte_text_is_measured_in_utf8_bytes(tmp_path: Path) -> None:
    # 3 bytes per character: under the limit in characters, over it in bytes.
    chars = MAX_RECORD_BYTES // 3 + 10
    path = jsonl(tmp_path / "wide.jsonl", GOOD, {"id": "wide", "text": "\u20ac" * chars})
    problem = only_problem(path)
    assert problem.line == 2 and "over the" in problem.reason


def test_line_over_the_line_limit_is_skipped_unparsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "MAX_LINE_BYTES", 1000)
    path = jsonl(
        tmp_path / "long.jsonl",
        GOOD,
        {"id": "long", "text": "y" * 5000},
        {"id": "after", "text": "fine"},
    )
    records, problems = split(read_records([path]))
    assert [r.external_id for r in records] == ["ok", "after"]
    assert [(p.line, "line limit" in p.reason) for p in problems] == [(2, True)]


# -- CSV ------------------------------------------------------------------------------------


def test_csv_rows_metadata_and_physical_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        'id,text,topic\n1,"hello, world",greet\n2,"two\nline\ntext",multi\n\n3,after,x\n',
        encoding="utf-8",
    )
    records, problems = split(read_records([path]))
    assert problems == []
    assert [(r.external_id, r.content, r.metadata, r.line) for r in records] == [
        ("1", "hello, world", {"topic": "greet"}, 2),
        ("2", "two\nline\ntext", {"topic": "multi"}, 3),
        ("3", "after", {"topic": "x"}, 7),
    ]


def test_csv_fields_options_bom_and_tsv(tmp_path: Path) -> None:
    path = tmp_path / "in.tsv"
    path.write_bytes(
        b"\xef\xbb\xbfkey\ttitle\tbody\tlang\tother\nk1\tT\tB\ten\tz\nk2\t\tB2\tfr\tz\n"
    )
    records, problems = split(
        read_records(
            [path], id_field="key", text_fields=["title", "body"], metadata_fields=["lang"]
        )
    )
    assert problems == []
    assert [(r.external_id, r.content, r.metadata) for r in records] == [
        ("k1", "T\n\nB", {"lang": "en"}),
        ("k2", "B2", {"lang": "fr"}),
    ]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (b",no id", "missing id field 'id'"),
        (b"x,", "missing text field 'text'"),
        (b"x,a,extra", "expected 2 columns as in the header, got 3"),
        (b"x", "expected 2 columns as in the header, got 1"),
        (b"x,caf\xe9", "not valid UTF-8"),
        (b"x,a\x00b", "text contains a NUL character"),
        (b"a\x00,b", "id contains a NUL character"),
    ],
)
def test_bad_csv_row_is_a_problem_at_its_line(tmp_path: Path, row: bytes, reason: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b'id,text\nok,"fine,\nmultiline"\n' + row + b"\nafter,still read\n")
    records, problems = split(read_records([path]))
    assert [r.external_id for r in records] == ["ok", "after"]
    assert len(problems) == 1
    assert (problems[0].source, problems[0].line) == (str(path), 4)
    assert reason in problems[0].reason


def test_csv_bad_utf8_inside_a_multiline_field_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b'id,text\nx,"first\nsec\xffond"\nok,fine\n')
    records, problems = split(read_records([path]))
    assert [r.external_id for r in records] == ["ok"]
    assert [(p.line, "of line 3" in p.reason) for p in problems] == [(2, True)]


def test_csv_huge_field_is_rejected_by_the_size_rule(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as fh:
        fh.write("id,text\nok,fine\n")
        fh.write("big," + "z" * (MAX_RECORD_BYTES + 1) + "\n")
        fh.write("after,fine\n")
    records, problems = split(read_records([path]))
    assert [r.external_id for r in records] == ["ok", "after"]
    assert [p.line for p in problems] == [3]
    assert "over the" in problems[0].reason


def test_csv_header_without_the_id_or_text_column_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("key,text\n1,a\n2,b\n")
    assert list(read_records([path])) == [
        InputProblem(
            str(path), 1, "the header has no id column 'id' (columns: key, text); pass --id-field"
        )
    ]
    path.write_text("id,body\n1,a\n")
    [problem] = list(read_records([path]))
    assert isinstance(problem, InputProblem)
    assert problem.line == 1 and "no text column 'text'" in problem.reason


def test_csv_bad_utf8_in_header(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(b"id,t\xe9xt\n1,a\n")
    [problem] = list(read_records([path]))
    assert isinstance(problem, InputProblem)
    assert (problem.source, problem.line) == (str(path), 1)
    assert "not valid UTF-8" in problem.reason


@pytest.mark.parametrize("content", [b"", b"\n\n", b"id,text\n", b"id,text\n\n\n"])
def test_empty_csv_is_one_problem(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    assert list(read_records([path])) == [
        InputProblem(str(path), None, "file is empty: no records")
    ]


# -- text and markdown files ----------------------------------------------------------------


def test_text_folder_ids_titles_and_order(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "b.md").write_text("Intro line\n\n## Real heading ##\n\nBody.", encoding="utf-8")
    (root / "a.txt").write_text("\n\n  First line  \nsecond", encoding="utf-8")
    (root / "sub" / "deeper" / "c.rst").write_text("Title\n=====\n\ntext", encoding="utf-8")
    (root / "sub" / "d.markdown").write_text("---\ntitle: x\n---\n# Front\n", encoding="utf-8")
    (root / "sub" / "e.MD").write_text("#hashtag not a heading\n", encoding="utf-8")
    (root / "skip.py").write_text("print('no')")
    (root / ".secret.md").write_text("# hidden file")
    (root / ".hidden" / "x.md").write_text("# hidden folder")
    records, problems = split(read_records([root]))
    assert problems == []
    assert [(r.external_id, r.metadata, r.line) for r in records] == [
        ("a.txt", {"path": "a.txt", "title": "First line"}, None),
        ("b.md", {"path": "b.md", "title": "Real heading"}, None),
        ("sub/d.markdown", {"path": "sub/d.markdown", "title": "Front"}, None),
        ("sub/deeper/c.rst", {"path": "sub/deeper/c.rst", "title": "Title"}, None),
        ("sub/e.MD", {"path": "sub/e.MD", "title": "#hashtag not a heading"}, None),
    ]
    assert records[1].content == "Intro line\n\n## Real heading ##\n\nBody."
    assert records[1].source == str(root / "b.md")


def test_single_text_file_id_is_its_name_and_title_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "note.md"
    path.write_text("# " + "t" * 300 + "\n\nbody", encoding="utf-8")
    [record] = list(read_records([path]))
    assert isinstance(record, RecordInput)
    assert record.external_id == "note.md"
    assert record.metadata == {"path": "note.md", "title": "t" * 200}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "file is empty: no records"),
        (b"  \n\n", "file is empty: no records"),
        (b"line one\nline \xff two\n", "not valid UTF-8"),
        (b"line one\nline\x00two\n", "contains a NUL character (line 2)"),
    ],
)
def test_bad_text_file_is_a_problem_for_the_file(tmp_path: Path, data: bytes, reason: str) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "good.txt").write_text("fine")
    (root / "bad.txt").write_bytes(data)
    records, problems = split(read_records([root]))
    assert [r.external_id for r in records] == ["good.txt"]
    assert [(p.source, p.line) for p in problems] == [(str(root / "bad.txt"), None)]
    assert reason in problems[0].reason


def test_text_file_over_the_limit_is_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    with path.open("wb") as fh:
        fh.truncate(MAX_RECORD_BYTES + 1)  # sparse: costs no disk or memory
    [problem] = list(read_records([path]))
    assert isinstance(problem, InputProblem)
    assert (problem.source, problem.line) == (str(path), None)
    assert "over the" in problem.reason


def test_folder_without_text_files_is_one_problem(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("id,text\n")
    [problem] = list(read_records([tmp_path]))
    assert isinstance(problem, InputProblem) and problem.source == str(tmp_path)
    assert "no records" in problem.reason


# -- stdin ----------------------------------------------------------------------------------


def test_stdin_jsonl_by_default(tmp_path: Path) -> None:
    stream = io.BytesIO(b'{"id": 1, "text": "one"}\nnot json\n')
    records, problems = split(read_records(["-"], stdin=stream))
    assert records == [RecordInput("1", "one", {}, "<stdin>", 1)]
    assert [(p.source, p.line) for p in problems] == [("<stdin>", 2)]


def test_stdin_csv_and_text(tmp_path: Path) -> None:
    records, _ = split(read_records(["-"], format="csv", stdin=io.BytesIO(b"id,text\na,b\n")))
    assert records == [RecordInput("a", "b", {}, "<stdin>", 2)]
    records, _ = split(read_records(["-"], format="text", stdin=io.BytesIO(b"# Hi\n\nbody")))
    assert [(r.external_id, r.content, r.metadata["title"]) for r in records] == [
        ("stdin", "# Hi\n\nbody", "Hi")
    ]


def test_empty_stdin_is_one_problem() -> None:
    assert list(read_records(["-"], stdin=io.BytesIO(b""))) == [
        InputProblem("<stdin>", None, "file is empty: no records")
    ]


# -- Python dicts ---------------------------------------------------------------------------


def test_records_from_dicts_applies_the_same_rules() -> None:
    meta = {"k": 1}
    rows: list[Any] = [
        {"id": "a", "text": "alpha", "metadata": meta},
        {"id": 2, "title": "T", "text": "x"},
        "not a mapping",
        {"id": "c", "text": "bad\x00"},
        {"id": "d", "text": "t", "metadata": {"when": object()}},
        {"id": "e", "text": "t", "metadata": {"x": float("nan")}},
        {"id": "f", "text": "lone \udc80 surrogate"},
    ]
    records, problems = split(records_from_dicts(rows, text_fields=("title", "text")))
    assert records == [
        RecordInput("a", "alpha", {"k": 1}, "<python>", 1),
        RecordInput("2", "T\n\nx", {}, "<python>", 2),
    ]
    assert records[0].metadata is not meta  # the caller's dict is not aliased
    assert [p.line for p in problems] == [3, 4, 5, 6, 7]
    assert "expected a mapping" in problems[0].reason
    assert "NUL" in problems[1].reason
    assert "JSON-serialisable" in problems[2].reason
    assert "JSON-serialisable" in problems[3].reason
    assert "surrogate" in problems[4].reason


# -- the shipped sample corpus --------------------------------------------------------------


def test_sample_corpus_reads_cleanly() -> None:
    path = REPO / "samples" / "sample_corpus.jsonl"
    records, problems = split(read_records([path], text_fields=["title", "text"]))
    assert problems == []
    assert len(records) == len({r.external_id for r in records}) >= 40
    by_id = {r.external_id: r for r in records}
    assert by_id["astro-003"].content == by_id["astro-003-dup"].content
    assert {"garden-001-copy", "db-004-reworded"} <= by_id.keys()
    assert all(set(r.metadata) == {"topic", "year", "lang"} for r in records)
