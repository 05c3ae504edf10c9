"""`embedplat model bench`: how fast each backend embeds here, and how close its vectors are.

A short self-check for the user's own hardware: every backend asked for embeds the built-in
sample (:func:`embedplat.embedders.exports.builtin_sample`, a few hundred sentences) a few
times, in turns (backend A, B, ..., then A, B, ... again), so that a change of machine load hits
them alike; the report gives texts/s per backend (min / median / max over the runs) and each
variant's cosine similarity to the torch (fp32) vectors of the same texts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedplat.embedders.backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    model_variant,
    require_runtime,
    variant_name,
)
from embedplat.embedders.base import Embedder
from embedplat.embedders.exports import builtin_sample
from embedplat.embedders.registry import ModelUnavailableError
from embedplat.errors import InvalidInputError, ModelError

__all__ = ["BackendBench", "ModelBench", "available_backends", "bench_model"]

DEFAULT_RUNS = 3


@dataclass(frozen=True, slots=True)
class BackendBench:
    """One backend's figures, or why it could not run."""

    backend: str
    model: str
    load_seconds: float | None = None
    texts_per_second: tuple[float, ...] = ()
    cosine_median: float | None = None
    cosine_p1: float | None = None
    cosine_min: float | None = None
    fingerprint: str | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one entry of `embedplat model bench --json`)."""
        rates = self.texts_per_second
        return {
            "backend": self.backend,
            "model": self.model,
            "load_seconds": self.load_seconds,
            "texts_per_second": {
                "min": min(rates) if rates else None,
                "median": statistics.median(rates) if rates else None,
                "max": max(rates) if rates else None,
                "runs": list(rates),
            },
            "speedup_vs_torch": None,
            "cosine_to_torch": {
                "median": self.cosine_median,
                "p1": self.cosine_p1,
                "min": self.cosine_min,
            },
            "fingerprint": self.fingerprint,
            "problem": self.problem,
        }


@dataclass(frozen=True, slots=True)
class ModelBench:
    """Every backend's :class:`BackendBench` for one model, on the same texts."""

    model: str
    texts: int
    runs: int
    backends: tuple[BackendBench, ...] = field(default_factory=tuple)

    def speedup(self, bench: BackendBench) -> float | None:
        """``bench``'s median texts/s over torch's (computed), None without both."""
        torch = next((b for b in self.backends if b.backend == DEFAULT_BACKEND), None)
        if torch is None or not torch.texts_per_second or not bench.texts_per_second:
            return None
        mine = statistics.median(bench.texts_per_second)
        return round(mine / statistics.median(torch.texts_per_second), 2)

    def to_json(self) -> dict[str, Any]:
        """The shape of `embedplat model bench --json`."""
        out = []
        for bench in self.backends:
            entry = bench.to_json()
            entry["speedup_vs_torch"] = self.speedup(bench)
            out.append(entry)
        return {"model": self.model, "texts": self.texts, "runs": self.runs, "backends": out}


def available_backends() -> list[str]:
    """The backends whose runtime is installed here (torch first)."""
    out = []
    for backend in BACKENDS:
        try:
            require_runtime(backend)
        except ModelUnavailableError:
            continue
        out.append(backend)
    return out


def bench_model(
    model: str,
    load: Callable[[str], Embedder],
    *,
    backends: Sequence[str] | None = None,
    runs: int = DEFAULT_RUNS,
    texts: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelBench:
    """Measure ``model`` on each of ``backends`` (default: every installed one); ``load``
    makes the embedder of a model name (exports are made on first use and timed in its
    ``load_seconds``). torch is always measured too: it is what the cosines compare with."""
    if runs < 1:
        raise InvalidInputError(f"runs must be at least 1, got {runs}")
    variant = model_variant(model)
    model = variant.base
    if backends is None and variant.backend != DEFAULT_BACKEND:
        backends = [variant.backend]
    sample = list(texts) if texts is not None else builtin_sample()
    if not sample:
        raise InvalidInputError("no texts to embed")
    wanted = list(dict.fromkeys(backends or available_backends()))
    if DEFAULT_BACKEND not in wanted:
        wanted.insert(0, DEFAULT_BACKEND)
    loaded: dict[str, Embedder] = {}
    failed: dict[str, BackendBench] = {}
    load_seconds: dict[str, float] = {}
    for backend in wanted:
        name = variant_name(model, backend)
        if progress is not None:
            progress(f"loading {name}")
        started = time.perf_counter()
        try:
            require_runtime(backend)
            embedder = load(name)
            embedder.embed(sample[:8])  # warm-up: first-call allocations are not timed
        except ModelError as exc:
            failed[backend] = BackendBench(backend, name, problem=str(exc))
            continue
        load_seconds[backend] = round(time.perf_counter() - started, 3)
        loaded[backend] = embedder
    if DEFAULT_BACKEND not in loaded:
        raise ModelError(
            f"the torch model {model!r} does not load ({failed[DEFAULT_BACKEND].problem}); "
            "the bench compares every backend with it"
        )
    rates: dict[str, list[float]] = {b: [] for b in loaded}
    vectors: dict[str, np.ndarray] = {}
    for run in range(runs):
        for backend, embedder in loaded.items():
            if progress is not None:
                progress(f"run {run + 1} of {runs}: {embedder.name}")
            started = time.perf_counter()
            vectors[backend] = embedder.embed(sample)
            rates[backend].append(round(len(sample) / (time.perf_counter() - started), 1))
    reference = vectors[DEFAULT_BACKEND]
    results = []
    for backend in wanted:
        if backend in failed:
            results.append(failed[backend])
            continue
        cosine = np.sum(vectors[backend] * reference, axis=1)
        results.append(
            BackendBench(
                backend,
                loaded[backend].name,
                load_seconds=load_seconds[backend],
                texts_per_second=tuple(rates[backend]),
                cosine_median=round(float(np.median(cosine)), 5),
                cosine_p1=round(float(np.percentile(cosine, 1)), 5),
                cosine_min=round(float(cosine.min()), 5),
                fingerprint=loaded[backend].fingerprint,
            )
        )
    return ModelBench(model, len(sample), runs, tuple(results))
