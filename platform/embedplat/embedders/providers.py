"""Which code makes the embedder of a model name: a registry of providers, and its loader.

A provider is a ``match`` (which model names it serves) and a ``factory`` (the embedder of one
such name). :func:`load_embedder` asks the providers, newest first, and falls back to
sentence-transformers, which serves any other name. Providers are registered by code:
in-process with :func:`register_embedder_provider`, and in another process (a CLI run, a Celery
worker) by a module named in ``EMBEDPLAT_PLUGINS`` that registers them when imported
(:func:`load_plugins`, called by :meth:`embedplat.config.Settings.from_env`).
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from embedplat.embedders.backends import DEFAULT_BACKEND, model_variant
from embedplat.embedders.base import Embedder
from embedplat.embedders.sentence_transformers import SentenceTransformerEmbedder
from embedplat.errors import ConfigurationError

__all__ = [
    "EmbedderFactory",
    "EmbedderProvider",
    "load_embedder",
    "load_plugins",
    "provider_for",
    "register_embedder_provider",
    "unregister_embedder_provider",
]


class EmbedderFactory(Protocol):
    """Makes the embedder of model ``name``; raises ``ModelError`` when it cannot."""

    def __call__(self, name: str, *, device: str | None, batch_size: int) -> Embedder: ...


@dataclass(frozen=True, eq=False)
class EmbedderProvider:
    """A registered provider: the names it serves and how it makes their embedders."""

    match: Callable[[str], bool]
    factory: EmbedderFactory


_lock = threading.Lock()
_providers: list[EmbedderProvider] = []
# One embedder per (name, device, batch size) per process, with the provider that made it
# (None: sentence-transformers), so unregistering a provider forgets what it made.
_embedders: dict[tuple[str, str | None, int], tuple[EmbedderProvider | None, Embedder]] = {}


def register_embedder_provider(
    match: str | Callable[[str], bool], factory: EmbedderFactory
) -> EmbedderProvider:
    """Serve the model names that ``match`` accepts with ``factory``; returns the provider.

    ``match`` is a predicate on the name, or a regular expression the whole name must match.
    A provider registered later wins over earlier ones for the names both accept.
    """
    predicate: Callable[[str], bool]
    if isinstance(match, str):
        pattern = re.compile(match)

        def predicate(name: str) -> bool:
            return pattern.fullmatch(name) is not None

    else:
        predicate = match
    provider = EmbedderProvider(predicate, factory)
    with _lock:
        _providers.insert(0, provider)
    return provider


def unregister_embedder_provider(provider: EmbedderProvider) -> None:
    """Remove ``provider`` and forget the embedders it made (no error if it is not registered)."""
    with _lock:
        if provider in _providers:
            _providers.remove(provider)
        for key in [k for k, (made_by, _) in _embedders.items() if made_by is provider]:
            del _embedders[key]


def provider_for(name: str) -> EmbedderProvider | None:
    """The newest registered provider that serves ``name``; None: sentence-transformers does."""
    with _lock:
        return next((p for p in _providers if p.match(name)), None)


def load_embedder(name: str, *, device: str | None = None, batch_size: int = 64) -> Embedder:
    """The embedder for model ``name``, loaded now; the same object for the same arguments.

    The newest registered provider whose ``match`` accepts ``name`` makes it; a backend
    variant (``NAME@onnx``, see :mod:`embedplat.embedders.backends`) runs on ONNX Runtime or
    OpenVINO (:class:`~embedplat.embedders.runtime.RuntimeEmbedder`); any other name is
    a sentence-transformers model (see :mod:`embedplat.embedders.sentence_transformers` for how
    names resolve). The model itself is loaded once per process and device, whatever the batch
    size. Raises :class:`~embedplat.errors.ModelError` when it cannot be loaded.
    """
    key = (name, device, batch_size)
    with _lock:
        cached = _embedders.get(key)
        provider = next((p for p in _providers if p.match(name)), None)
    if cached is not None:
        return cached[1]
    variant = model_variant(name)
    if provider is not None:
        embedder = provider.factory(name, device=device, batch_size=batch_size)
    elif variant.backend != DEFAULT_BACKEND:
        from embedplat.embedders.runtime import RuntimeEmbedder

        embedder = RuntimeEmbedder(variant.name, batch_size=batch_size).load()
    else:
        embedder = SentenceTransformerEmbedder(
            variant.base, device=device, batch_size=batch_size
        ).load()
    with _lock:
        # Two threads may race to create it: both get the first one stored.
        return _embedders.setdefault(key, (provider, embedder))[1]


def load_plugins(modules: Iterable[str], *, variable: str = "EMBEDPLAT_PLUGINS") -> None:
    """Import each of ``modules`` (dotted names) so that it can register its providers.

    Importing is idempotent: a module already imported is not run again. A module that cannot
    be imported raises :class:`~embedplat.errors.ConfigurationError` naming ``variable``, the
    setting that listed it.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(
                f"{variable} names the module {module!r}, which cannot be imported ({exc}); "
                "install it or put its folder on PYTHONPATH"
            ) from exc
