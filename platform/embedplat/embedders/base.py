"""The embedder protocol: the seam between the sync engine and any model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from embedplat.chunking import TokenCounter
from embedplat.errors import ModelMismatchError


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into float32 vectors of a fixed dimension."""

    @property
    def name(self) -> str:
        """The model's name, as stored with every vector."""

    @property
    def dimensions(self) -> int:
        """Length of every vector."""

    @property
    def normalized(self) -> bool:
        """Whether vectors have unit length (cosine = dot product)."""

    @property
    def fingerprint(self) -> str:
        """Hex digest identifying the exact model files; changes when the model changes."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``: float32 array of shape (len(texts), dimensions)."""

    def token_counter(self) -> TokenCounter:
        """The model's own tokenizer, for chunking."""


def check_vector(vector: object, *, dimensions: int, model_name: str) -> np.ndarray:
    """``vector`` as a float32 1-D array of the model's dimension, or a clear error."""
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] != dimensions:
        raise ModelMismatchError(
            f"the vector has shape {tuple(array.shape)}, but model {model_name} produces "
            f"{dimensions}-dimensional vectors; embed the query with that model"
        )
    return array
