"""Embedders: the provider protocol, the sentence-transformers provider, a test embedder.

Use :func:`load_embedder` to get one by model name; nothing heavy is imported until a
sentence-transformers model is actually loaded.
"""

from __future__ import annotations

import re
import threading

from embedplat.chunking import TokenCounter
from embedplat.embedders.base import Embedder, check_vector
from embedplat.embedders.sentence_transformers import SentenceTransformerEmbedder
from embedplat.embedders.testing import HashEmbedder
from embedplat.errors import ModelError

__all__ = [
    "Embedder",
    "HashEmbedder",
    "SentenceTransformerEmbedder",
    "TokenCounter",
    "check_vector",
    "load_embedder",
]

TEST_MODEL_PREFIX = "test-hash-"
_TEST_NAME = re.compile(rf"^{TEST_MODEL_PREFIX}(\d+)$")

_lock = threading.Lock()
_embedders: dict[tuple[str, str | None, int], Embedder] = {}


def load_embedder(name: str, *, device: str | None = None, batch_size: int = 64) -> Embedder:
    """The embedder for model ``name``, loaded now; the same object for the same arguments.

    ``test-hash-N`` (e.g. ``test-hash-64``) gives the deterministic :class:`HashEmbedder` with N
    dimensions; any other name is a sentence-transformers model (see
    :mod:`embedplat.embedders.sentence_transformers` for how names resolve). The model itself
    is loaded once per process and device, whatever the batch size. Raises
    :class:`~embedplat.errors.ModelError` when it cannot be loaded.
    """
    key = (name, device, batch_size)
    with _lock:
        embedder = _embedders.get(key)
    if embedder is not None:
        return embedder
    if name.startswith(TEST_MODEL_PREFIX):
        match = _TEST_NAME.match(name)
        if match is None or int(match.group(1)) < 2:
            raise ModelError(
                f"unknown test model {name!r}: use {TEST_MODEL_PREFIX}N with N >= 2 dimensions"
            )
        embedder = HashEmbedder(int(match.group(1)))
    else:
        embedder = SentenceTransformerEmbedder(name, device=device, batch_size=batch_size).load()
    with _lock:
        # Two threads may race to create it: both get the first one stored.
        return _embedders.setdefault(key, embedder)
