"""A deterministic embedder for tests where the model is not the point (no torch needed).

Texts become L2-normalised bags of hashed words (SHA-256 of each lowercase word picks a
dimension and a sign), so texts that share words are similar and equal texts give equal
vectors. ``fail_on`` and ``delay_s`` inject failures and slowness, to test the sync engine's
failure isolation, leases and concurrency.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence

import numpy as np

from embedplat.chunking import TokenCounter

__all__ = ["HashEmbedder", "RegexTokenCounter"]

# A token is a run of word characters or one other non-space character.
_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")


class RegexTokenCounter:
    """Counts runs of word characters and single other non-space characters.

    A cheap, deterministic stand-in for a model tokenizer; like one, its counts add up over
    whitespace-separated pieces.
    """

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """One count per text."""
        findall = _TOKEN.findall
        return [len(findall(text)) for text in texts]


class HashEmbedder:
    """Bag-of-hashed-words vectors, L2-normalised; its name is ``test-hash-{dimensions}``.

    ``fail_on``: ``embed`` raises :class:`RuntimeError` for a whole call when any text matches
    (as a real model fails a batch), so callers must bisect to find the bad text.
    ``delay_s``: seconds slept on every ``embed`` call.
    """

    def __init__(
        self,
        dimensions: int = 64,
        *,
        fail_on: Callable[[str], bool] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        if dimensions < 2:
            raise ValueError(f"dimensions must be at least 2, got {dimensions}")
        self._dimensions = dimensions
        self.fail_on = fail_on
        self.delay_s = delay_s
        self.calls = 0
        """Number of ``embed`` calls that returned vectors."""
        self.texts_embedded = 0
        """Number of texts those calls embedded."""

    @property
    def name(self) -> str:
        """``test-hash-{dimensions}``."""
        return f"test-hash-{self._dimensions}"

    @property
    def dimensions(self) -> int:
        """Vector length."""
        return self._dimensions

    @property
    def normalized(self) -> bool:
        """Always True."""
        return True

    @property
    def fingerprint(self) -> str:
        """Constant per dimension count (the algorithm is the model)."""
        return hashlib.sha256(f"embedplat-hash-embedder-v1:{self._dimensions}".encode()).hexdigest()

    def token_counter(self) -> TokenCounter:
        """A :class:`RegexTokenCounter`."""
        return RegexTokenCounter()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors of shape ``(len(texts), dimensions)``."""
        texts = list(texts)
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        if self.fail_on is not None:
            for text in texts:
                if self.fail_on(text):
                    raise RuntimeError(f"injected embedding failure for {text[:40]!r}")
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
        self.calls += 1
        self.texts_embedded += len(texts)
        return out
