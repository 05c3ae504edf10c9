"""A folder walk says which files it reads and reports every file it leaves out."""

from __future__ import annotations

from pathlib import Path

from embedplat.errors import InputProblem
from embedplat.ingest import RecordInput, SkippedFile, read_records


def _tree(root: Path) -> None:
    files = {
        "a.md": "# Alpha\n\nbody",
        "b.TXT": "bravo line\nsecond",
        "guides/c.rst": "Charlie\n=======\n",
        "guides/deep/d.markdown": "---\ntitle: x\n---\n## Delta ##\n",
        "image.png": "not text",
        "notes.docx": "not text either",
        ".hidden.md": "# hidden",
        ".git/config.md": "# inside a hidden folder",
        "guides/.cache/e.md": "# also hidden",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_folder_reads_text_files_and_reports_the_rest(tmp_path: Path) -> None:
    _tree(tmp_path)
    skipped: list[SkippedFile] = []
    items = list(read_records([tmp_path], on_skip=skipped.append))
    assert all(isinstance(item, RecordInput) for item in items)
    records = {item.external_id: item.metadata for item in items if isinstance(item, RecordInput)}
    assert records == {
        "a.md": {"path": "a.md", "title": "Alpha"},
        "b.TXT": {"path": "b.TXT", "title": "bravo line"},
        "guides/c.rst": {"path": "guides/c.rst", "title": "Charlie"},
        "guides/deep/d.markdown": {"path": "guides/deep/d.markdown", "title": "Delta"},
    }
    not_text = "not a text file (reads .txt, .md, .markdown, .rst)"
    assert skipped == [
        SkippedFile(str(tmp_path / ".git"), "hidden folder"),
        SkippedFile(str(tmp_path / ".hidden.md"), "hidden file"),
        SkippedFile(str(tmp_path / "guides" / ".cache"), "hidden folder"),
        SkippedFile(str(tmp_path / "image.png"), not_text),
        SkippedFile(str(tmp_path / "notes.docx"), not_text),
    ]


def test_without_on_skip_the_walk_is_unchanged(tmp_path: Path) -> None:
    _tree(tmp_path)
    with_callback = list(read_records([tmp_path], on_skip=lambda item: None))
    assert list(read_records([tmp_path])) == with_callback


def test_a_folder_with_only_skipped_files_is_a_problem_and_lists_them(tmp_path: Path) -> None:
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    skipped: list[SkippedFile] = []
    (item,) = read_records([tmp_path], on_skip=skipped.append)
    assert isinstance(item, InputProblem) and "no records" in item.reason
    assert [s.path for s in skipped] == [str(tmp_path / "image.png")]


def test_a_file_given_by_itself_is_read_whatever_its_folder_holds(tmp_path: Path) -> None:
    _tree(tmp_path)
    skipped: list[SkippedFile] = []
    (item,) = read_records([tmp_path / "guides" / "c.rst"], on_skip=skipped.append)
    assert isinstance(item, RecordInput) and item.external_id == "c.rst"
    assert skipped == []
