"""Embedders: the provider protocol, the sentence-transformers provider, a test embedder."""

from __future__ import annotations

import re

from embedplat.chunking import TokenCounter
from embedplat.embedders.base import Embedder, check_vector
from embedplat.embedders.sentence_transformers import SentenceTransformerEmbedder
from embedplat.embedders.testing import HashEmbedder

__all__ = [
    "Embedder",
    "HashEmbedder",
    "SentenceTransformerEmbedder",
    "TokenCounter",
    "check_vector",
    "load_embedder",
]

_TEST_NAME = re.compile(r"^test-hash-(\d+)$")
_cache: dict[tuple[str, str | None, int], Embedder] = {}


def load_embedder(name: str, *, device: str | None = None, batch_size: int = 64) -> Embedder:
    """The embedder for a model name; the same object for the same arguments in a process.

    ``test-hash-N`` gives the deterministic :class:`HashEmbedder` of N dimensions; any other
    name is a sentence-transformers model.
    """
    key = (name, device, batch_size)
    embedder = _cache.get(key)
    if embedder is None:
        match = _TEST_NAME.match(name)
        if match:
            embedder = HashEmbedder(int(match.group(1)))
        else:
            embedder = SentenceTransformerEmbedder(name, device=device, batch_size=batch_size)
        _cache[key] = embedder
    return embedder
