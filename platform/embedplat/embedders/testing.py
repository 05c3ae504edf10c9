"""A deterministic embedder for tests where the model is not the point (no torch needed).

Texts become normalised bags of hashed words, so texts sharing words are similar and identical
texts give identical vectors. ``fail_on`` and ``delay_s`` inject failures and slowness to test
the sync engine's failure isolation, leases and concurrency.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence

import numpy as np

from embedplat.chunking import TokenCounter

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class RegexTokenCounter:
    """Counts words and punctuation marks: a cheap stand-in for a model tokenizer."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(_WORD.findall(text)) for text in texts]


class HashEmbedder:
    """Bag-of-hashed-words vectors, L2-normalised; name ``test-hash-{dimensions}``."""

    def __init__(
        self,
        dimensions: int = 64,
        *,
        fail_on: Callable[[str], bool] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        if dimensions < 2:
            raise ValueError("dimensions must be at least 2")
        self._dimensions = dimensions
        self.fail_on = fail_on
        self.delay_s = delay_s
        self.calls: list[list[str]] = []

    @property
    def name(self) -> str:
        return f"test-hash-{self._dimensions}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def normalized(self) -> bool:
        return True

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"hash-embedder-v1:{self._dimensions}".encode()).hexdigest()

    def token_counter(self) -> TokenCounter:
        return RegexTokenCounter()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on is not None:
            bad = [t for t in texts if self.fail_on(t)]
            if bad:
                raise RuntimeError(f"injected failure for {bad[0][:40]!r}")
        self.calls.append(texts)
        out = np.zeros((len(texts), self._dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self._dimensions] += 1.0 if (value >> 32) & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:
                out[row, 0] = 1.0
            else:
                out[row] /= norm
        return out
