"""Embedders on ONNX Runtime and OpenVINO: a backend variant of a sentence-transformers model.

:class:`RuntimeEmbedder` serves a variant name such as ``all-MiniLM-L6-v2@onnx-int8`` (see
:mod:`embedplat.embedders.backends`). It finds the model's files as the torch backend does,
makes or reuses the cached export (:mod:`embedplat.embedders.exports`), and then needs neither
torch nor sentence-transformers: the Rust tokenizer cuts and pads the texts, the runtime
computes the token embeddings, numpy pools and normalises them as the model's own modules do.

Texts are sorted by token count before batching, so each batch is padded to about its own
length, and the vectors come back in input order.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedplat.chunking import TokenCounter
from embedplat.config import THREADS_VARIABLE, env_int
from embedplat.embedders.backends import DEFAULT_BACKEND, model_variant, require_runtime
from embedplat.embedders.exports import ExportManifest, ensure_export
from embedplat.embedders.sentence_transformers import (
    FastTokenCounter,
    SentenceTransformerEmbedder,
)
from embedplat.errors import ModelError

__all__ = ["RuntimeEmbedder", "default_threads"]

_lock = threading.Lock()
# One loaded export per folder per process.
_sessions: dict[str, _Session] = {}
#: Inputs of at most this many texts (a search's query) run on one thread: a short text gains
#: nothing from a second one, and each parallel step would wait for a thread that another
#: process's work has descheduled (see docs/models.md#backends).
SMALL_INPUT_TEXTS = 4


def default_threads() -> int:
    """Threads a runtime uses unless told: ``EMBEDPLAT_THREADS``, else the CPUs this process
    may run on."""
    configured = env_int(os.environ, THREADS_VARIABLE, 0, minimum=1)
    if configured:
        return configured
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Session:
    """A loaded export: its tokenizer, and one runtime per thread count (made on first use)."""

    def __init__(self, folder: Path, manifest: ExportManifest) -> None:
        from tokenizers import Tokenizer

        self.manifest = manifest
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(manifest.max_seq_length)
        self.tokenizer = tokenizer
        self._model_path = str(folder / manifest.model_file)
        self._runners: dict[int, tuple[Callable[[dict[str, np.ndarray]], np.ndarray], Any]] = {}
        self._lock = threading.Lock()

    def runner(self, threads: int) -> tuple[Callable[[dict[str, np.ndarray]], np.ndarray], Any]:
        """The runtime with ``threads`` threads, and the lock that lets one call run it at a
        time."""
        with self._lock:
            made = self._runners.get(threads)
            if made is None:
                made = self._runners[threads] = (self._make(threads), threading.Lock())
            return made

    def _make(self, threads: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        if self.manifest.backend.startswith("onnx"):
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            session = ort.InferenceSession(
                self._model_path, options, providers=["CPUExecutionProvider"]
            )

            def run_onnx(feed: dict[str, np.ndarray]) -> np.ndarray:
                return np.asarray(session.run(None, feed)[0])

            return run_onnx
        import openvino as ov

        compiled = ov.Core().compile_model(
            self._model_path,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
                # fp32 everywhere: a CPU with bf16 units would otherwise run in bf16 and
                # give other vectors than the variant's fingerprint stands for.
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        request = compiled.create_infer_request()

        def run_openvino(feed: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(request.infer(feed)[0])

        return run_openvino

    def embed(self, texts: Sequence[str], batch_size: int, threads: int) -> np.ndarray:
        manifest = self.manifest
        run, run_lock = self.runner(threads)
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(texts), manifest.dimensions), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            ids = np.full((len(rows), width), manifest.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, row in enumerate(rows):
                tokens = encodings[row].ids
                ids[i, : len(tokens)] = tokens
                mask[i, : len(tokens)] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in manifest.input_names:
                feed["token_type_ids"] = np.zeros_like(ids)
            with run_lock:
                hidden = run({n: feed[n] for n in manifest.input_names})
            out[rows] = _pool(hidden.astype(np.float32, copy=False), mask, manifest.pooling)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: np.ndarray = out / np.maximum(norms, 1e-12)
        return unit


def _pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Sentence vectors from token embeddings, as sentence-transformers' Pooling does."""
    pooled: np.ndarray
    if mode == "cls":
        pooled = hidden[:, 0]
        return pooled
    weights = mask[..., None].astype(np.float32)
    if mode == "max":
        pooled = np.where(weights > 0, hidden, -1e9).max(axis=1)
    else:
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled


class RuntimeEmbedder:
    """A backend variant (``NAME@onnx``, ``NAME@openvino-int8``, ...) of a sentence-transformers
    model: unit-length float32 vectors, computed by ONNX Runtime or OpenVINO on the CPU.

    ``threads``: the runtime's threads for bulk calls (default :func:`default_threads`); a
    call with at most :data:`SMALL_INPUT_TEXTS` texts runs on one thread.
    """

    def __init__(self, name: str, *, batch_size: int = 64, threads: int | None = None) -> None:
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        variant = model_variant(name)
        if variant.backend == DEFAULT_BACKEND:
            raise ModelError(f"{name!r} names no ONNX or OpenVINO backend")
        self._name = variant.name
        self._variant = variant
        self._source = SentenceTransformerEmbedder(variant.base, device="cpu")
        self.batch_size = batch_size
        self._threads = threads
        self._session: _Session | None = None
        self._counter: TokenCounter | None = None

    def load(self) -> RuntimeEmbedder:
        """Make or reuse the export and load it; raises :class:`ModelError` when it cannot."""
        if self._session is not None:
            return self
        require_runtime(self._variant.backend)
        self._threads = self._threads or default_threads()
        source_fingerprint = self._source.fingerprint
        try:
            folder, manifest = ensure_export(
                self._variant.base,
                self._variant.backend,
                source_fingerprint,
                lambda: self._source.model,
            )
        except ModelError:
            raise
        except Exception as exc:  # exporter and quantizer errors of every kind
            raise ModelError(
                f"cannot export {self._variant.base!r} for backend {self._variant.backend!r} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        with _lock:
            session = _sessions.get(str(folder))
            if session is None:
                try:
                    session = _Session(folder, manifest)
                    session.runner(self.threads)  # a broken model file fails here, not later
                except Exception as exc:
                    raise ModelError(
                        f"cannot load the {self._variant.backend} export of "
                        f"{self._variant.base!r} from {str(folder)!r} ({exc}); delete that "
                        "folder to export the model again"
                    ) from exc
                _sessions[str(folder)] = session
        self._session = session
        return self

    @property
    def manifest(self) -> ExportManifest:
        """The export's manifest (loads the export)."""
        session = self.load()._session
        assert session is not None
        return session.manifest

    @property
    def backend(self) -> str:
        """The backend that runs the model."""
        return self._variant.backend

    @property
    def name(self) -> str:
        """The variant's name (``NAME@backend``)."""
        return self._name

    @property
    def dimensions(self) -> int:
        """Vector length of the model."""
        return self.manifest.dimensions

    @property
    def normalized(self) -> bool:
        """Always True: vectors are L2-normalised."""
        return True

    @property
    def fingerprint(self) -> str:
        """The variant's fingerprint: the model files', the backend and its export recipe."""
        return self.manifest.fingerprint

    def token_counter(self) -> TokenCounter:
        """The model's own tokenizer, without special tokens."""
        if self._counter is None:
            session = self.load()._session
            assert session is not None
            self._counter = FastTokenCounter(session.tokenizer)
        return self._counter

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors of shape ``(len(texts), dimensions)``."""
        texts = list(texts)
        session = self.load()._session
        assert session is not None
        if not texts:
            return np.zeros((0, session.manifest.dimensions), dtype=np.float32)
        threads = 1 if len(texts) <= SMALL_INPUT_TEXTS else self.threads
        return session.embed(texts, self.batch_size, threads)

    @property
    def threads(self) -> int:
        """Threads of a bulk call (more than :data:`SMALL_INPUT_TEXTS` texts), fixed when the
        export is loaded."""
        return self._threads or default_threads()
