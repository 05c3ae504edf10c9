"""The embedder protocol: the seam between the sync engine (or search) and any model.

Anything with these six members is an embedder. To make one available by model name, register
a provider (``match``: the names it serves, ``factory``: the embedder of one name)::

    from embedplat.embedders import register_embedder_provider

    register_embedder_provider("my-model-.*", lambda name, *, device, batch_size: MyModel(name))

Names no provider matches go to sentence-transformers. Registration is per process: for the
CLI and the Celery workers, put the registering module in ``EMBEDPLAT_PLUGINS`` (comma-separated
module names, imported when the settings are read), e.g. ``EMBEDPLAT_PLUGINS=myapp.embedders``.
The test suite registers its deterministic embedder this way
(``tests/fix_embedders.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from embedplat.chunking import TokenCounter
from embedplat.errors import ModelMismatchError

__all__ = ["Embedder", "check_vector"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into float32 vectors of one fixed dimension."""

    @property
    def name(self) -> str:
        """The model's name, as stored with every vector."""
        ...

    @property
    def dimensions(self) -> int:
        """Length of every vector."""
        ...

    @property
    def normalized(self) -> bool:
        """Whether vectors have unit length (so cosine similarity is the dot product)."""
        ...

    @property
    def fingerprint(self) -> str:
        """Hex digest of the exact model files; changes whenever the model changes."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``: a float32 array of shape ``(len(texts), dimensions)``."""
        ...

    def token_counter(self) -> TokenCounter:
        """The model's own tokenizer as a :class:`TokenCounter`, for chunking."""
        ...


def check_vector(vector: object, *, dimensions: int, model_name: str) -> np.ndarray:
    """``vector`` as a 1-D float32 array of ``dimensions`` values, or :class:`ModelMismatchError`.

    Use it on vectors that come from outside (a caller's query vector) before comparing them
    with a model's stored vectors.
    """
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ModelMismatchError(
            f"the vector is not a list of numbers ({exc}); model {model_name} expects "
            f"{dimensions} floats"
        ) from exc
    if array.ndim != 1 or array.shape[0] != dimensions:
        got = f"{array.shape[0]} values" if array.ndim == 1 else f"shape {tuple(array.shape)}"
        raise ModelMismatchError(
            f"the vector has {got}, but model {model_name} produces {dimensions}-dimensional "
            f"vectors; embed the query with {model_name} (or search a collection of the "
            "model the vector came from)"
        )
    return array
