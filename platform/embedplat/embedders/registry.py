"""Registered model names as this process knows them, and what a model folder's config says.

A name registered with ``embedplat model add`` lives in the database (table
``embedplat.registered_models``, managed by :mod:`embedplat.models`), so every process that
embeds resolves it the same way. The loader never connects to a database itself: a process
learns a registration when it reads one. Every lookup of a collection brings its model's
registration along (:func:`embedplat.collections.get_collection`, which the sync engine and
search call before they load a model), and :func:`embedplat.models.require_model` reads one by
name. :func:`remember_registration` keeps what was read; the loader and
:func:`~embedplat.embedders.locate_model` consult :func:`registration`.

:func:`read_model_facts` reads a sentence-transformers folder's dimensions, maximum sequence
length, Normalize module and prompts from its small config files, without reading weights.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedplat.errors import InvalidInputError, ModelError

__all__ = [
    "ModelFacts",
    "ModelUnavailableError",
    "RegisteredModel",
    "facts_from_files",
    "read_model_facts",
    "registration",
    "registration_mismatch",
    "remember_registration",
]


class ModelUnavailableError(ModelError, InvalidInputError):
    """A model name that cannot be served here: no registered provider, folder, bundled copy,
    installed extra, cached or hub copy has it, or the libraries that would run it are not
    installed."""


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What a model's config files say about it (None: the files do not say)."""

    dimensions: int | None = None
    """Vector length: the last Dense module's ``out_features``, else the Pooling module's
    ``word_embedding_dimension``, else config.json's ``hidden_size``."""
    max_seq_length: int | None = None
    """Tokens the model reads per text (sentence_bert_config.json); longer texts are cut."""
    normalize_module: bool | None = None
    """Whether modules.json ends in a Normalize module (None: no modules.json)."""
    prompts: Mapping[str, str] = field(default_factory=dict)
    """config_sentence_transformers.json "prompts", e.g. ``{"query": "query: "}``."""
    default_prompt_name: str | None = None


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    """A local model folder registered under a name (a row of ``embedplat.registered_models``)."""

    name: str
    path: str
    """The folder, absolute; every process that embeds with the name loads it from there."""
    fingerprint: str
    """:func:`~embedplat.embedders.sentence_transformers.fingerprint_folder` of the folder when
    it was registered; a process whose folder hashes differently refuses to embed with it."""
    dimensions: int
    max_seq_length: int | None = None
    normalize_module: bool = False
    distance: str = "cosine"
    prompts: Mapping[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the registration keys of `embedplat model add --json`)."""
        return {
            "name": self.name,
            "path": self.path,
            "fingerprint": self.fingerprint,
            "dimensions": self.dimensions,
            "max_seq_length": self.max_seq_length,
            "model_normalizes": self.normalize_module,
            "distance": self.distance,
            "prompts": dict(self.prompts),
            "default_prompt_name": self.default_prompt_name,
        }


_lock = threading.Lock()
_registrations: dict[str, RegisteredModel] = {}


def remember_registration(name: str, registered: RegisteredModel | None) -> None:
    """Record what the database says ``name`` is registered as (None: not registered)."""
    with _lock:
        if registered is None:
            _registrations.pop(name, None)
        else:
            _registrations[name] = registered


def registration(name: str) -> RegisteredModel | None:
    """The registration of ``name`` this process last read from the database, or None."""
    with _lock:
        return _registrations.get(name)


def registration_mismatch(registered: RegisteredModel, found: str) -> str:
    """The message for a registered folder whose files here hash to ``found``."""
    return (
        f"model {registered.name!r} is registered with fingerprint {registered.fingerprint[:12]} "
        f"(folder {registered.path!r}), but the files in that folder here have fingerprint "
        f"{found[:12]}; vectors of two models are never mixed: restore the registered files "
        "here, or register the changed folder under a new name "
        "(`embedplat model add NAME --path FOLDER`)"
    )


# -- facts from config files ------------------------------------------------------------------


def read_model_facts(folder: str | Path) -> ModelFacts:
    """The facts a model folder's config files state (no weights are read)."""
    root = Path(folder)

    def read(relative: str) -> str | None:
        path = root / relative
        try:
            return path.read_text(encoding="utf-8") if path.is_file() else None
        except (OSError, UnicodeDecodeError):
            return None

    return facts_from_files(read)


def facts_from_files(read: Callable[[str], str | None]) -> ModelFacts:
    """:class:`ModelFacts` from a model's files; ``read`` returns a file's text by its path
    relative to the model folder (``1_Pooling/config.json``), None when there is none."""
    modules = _json(read, "modules.json")
    dimensions: int | None = None
    normalize: bool | None = None
    if isinstance(modules, list):
        normalize = False
        ordered = sorted(
            (m for m in modules if isinstance(m, dict)), key=lambda m: _int(m.get("idx")) or 0
        )
        for module in ordered:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            path = str(module.get("path", "")).strip("/")
            config = _json(read, f"{path}/config.json" if path else "config.json")
            if kind == "Pooling" and isinstance(config, dict):
                dimensions = _int(config.get("word_embedding_dimension")) or _int(
                    config.get("embedding_dimension")
                )
            elif kind == "Dense" and isinstance(config, dict):
                dimensions = _int(config.get("out_features")) or dimensions
            elif kind == "Normalize":
                normalize = True
    if dimensions is None:
        # A plain transformers model: sentence-transformers mean-pools its hidden states.
        config = _json(read, "config.json")
        if isinstance(config, dict):
            dimensions = _int(config.get("hidden_size")) or _int(config.get("d_model"))
    sbert = _json(read, "sentence_bert_config.json")
    max_seq_length = _int(sbert.get("max_seq_length")) if isinstance(sbert, dict) else None
    st_config = _json(read, "config_sentence_transformers.json")
    prompts: dict[str, str] = {}
    default_prompt: str | None = None
    if isinstance(st_config, dict):
        raw = st_config.get("prompts")
        if isinstance(raw, dict):
            prompts = {str(k): v for k, v in raw.items() if isinstance(v, str)}
        name = st_config.get("default_prompt_name")
        default_prompt = name if isinstance(name, str) else None
    return ModelFacts(dimensions, max_seq_length, normalize, prompts, default_prompt)


def _json(read: Callable[[str], str | None], relative: str) -> Any:
    text = read(relative)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
