"""Embedders: the provider protocol, a registry of providers, the sentence-transformers default.

Use :func:`load_embedder` to get one by model name (:func:`locate_model` says, without
loading anything, whether and where it would be found); nothing heavy is imported until a
sentence-transformers model is actually loaded. Other embedders (another runtime, a remote
service, the tests' deterministic one) are added with :func:`register_embedder_provider`, from
a module named in ``EMBEDPLAT_PLUGINS`` when another process (the CLI, a worker) must know them;
see :mod:`embedplat.embedders.base` for the protocol and :mod:`embedplat.embedders.providers`
for the registry. Local model folders registered by name (``embedplat model add``) are kept in
the database (:mod:`embedplat.models`); :mod:`embedplat.embedders.registry` holds what this
process read of them, and :mod:`embedplat.embedders.mpnet` reassembles all-mpnet-base-v2 from
its part packages.
"""

from __future__ import annotations

from embedplat.chunking import TokenCounter
from embedplat.embedders.base import Embedder, check_vector
from embedplat.embedders.locate import ModelSource, ModelUnavailableError, locate_model
from embedplat.embedders.providers import (
    EmbedderFactory,
    EmbedderProvider,
    load_embedder,
    load_plugins,
    provider_for,
    register_embedder_provider,
    unregister_embedder_provider,
)
from embedplat.embedders.registry import ModelFacts, RegisteredModel, read_model_facts
from embedplat.embedders.sentence_transformers import SentenceTransformerEmbedder

__all__ = [
    "Embedder",
    "EmbedderFactory",
    "EmbedderProvider",
    "ModelFacts",
    "ModelSource",
    "ModelUnavailableError",
    "RegisteredModel",
    "SentenceTransformerEmbedder",
    "TokenCounter",
    "check_vector",
    "load_embedder",
    "load_plugins",
    "locate_model",
    "provider_for",
    "read_model_facts",
    "register_embedder_provider",
    "unregister_embedder_provider",
]
