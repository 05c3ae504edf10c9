"""A deterministic embedder for the benchmarks where the model is not the point (no torch).

Texts become L2-normalised bags of hashed words (SHA-256 of each lowercase word picks a
dimension and a sign): equal texts give equal vectors, texts sharing words are similar.
Importing this module registers it for the model names ``bench-hash-<dimensions>``; a worker
process started by a benchmark imports it through ``EMBEDPLAT_PLUGINS=benchmarks.hash_embedder``
(see :func:`plugin_env`). The product has no built-in test embedder, so the benchmarks bring
their own.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence

import numpy as np

from embedplat.embedders import Embedder, register_embedder_provider

from .common import HERE

__all__ = ["BenchHashEmbedder", "model_name", "plugin_env"]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")
_NAME = re.compile(r"bench-hash-(\d+)")


def plugin_env() -> dict[str, str]:
    """Environment for a process that must know these model names: the module to import, and
    the repository root on the path so that ``benchmarks`` imports from any working directory."""
    path = [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"EMBEDPLAT_PLUGINS": __name__, "PYTHONPATH": os.pathsep.join(path)}


def model_name(dimensions: int) -> str:
    return f"bench-hash-{dimensions}"


class WordCounter:
    """Runs of word characters and single other non-space characters: a cheap tokenizer."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(_TOKEN.findall(text)) for text in texts]


class BenchHashEmbedder:
    """Bag-of-hashed-words vectors, L2-normalised, named ``bench-hash-<dimensions>``."""

    def __init__(self, dimensions: int = 64) -> None:
        if dimensions < 2:
            raise ValueError(f"dimensions must be at least 2, got {dimensions}")
        self._dimensions = dimensions

    @property
    def name(self) -> str:
        return model_name(self._dimensions)

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def normalized(self) -> bool:
        return True

    @property
    def fingerprint(self) -> str:
        # The algorithm is the model: constant per dimension count.
        return hashlib.sha256(f"embedplat-bench-hash-v1:{self._dimensions}".encode()).hexdigest()

    def token_counter(self) -> WordCounter:
        return WordCounter()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            vector = out[row]
            for word in _WORD.findall(text.lower()):
                value = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "big")
                vector[value % self._dimensions] += 1.0 if (value >> 63) & 1 else -1.0
            norm = float(np.linalg.norm(vector))
            if norm == 0.0:
                vector[0] = 1.0  # no words: a fixed unit vector keeps the output normalised
            else:
                vector /= norm
        return out


def _factory(name: str, *, device: str | None, batch_size: int) -> Embedder:
    match = _NAME.fullmatch(name)
    assert match is not None  # the provider's pattern accepted the name
    return BenchHashEmbedder(int(match.group(1)))


register_embedder_provider(_NAME.pattern, _factory)
