"""Inference backends: which runtime computes a model's vectors, and how a model name says so.

A backend variant of a model is a model of its own: ``all-MiniLM-L6-v2@openvino`` is
all-MiniLM-L6-v2 exported to OpenVINO. Its vectors differ slightly from the PyTorch model's
(an int8 variant's by more), so it has its own name and fingerprint, a collection names it as
its model, and a collection moves from one variant to another only through a model switch;
vectors of two variants are never compared. ``torch`` is the model as sentence-transformers
runs it, and its name is the plain model name, so collections made before backends existed
keep their model.

====================  ===================================================  ====================
backend               what runs                                            extra
====================  ===================================================  ====================
``torch``             sentence-transformers on PyTorch, fp32               ``embedplat[model]``
``onnx``              ONNX Runtime, the model exported to ONNX, fp32       ``embedplat[onnx]``
``onnx-int8``         ONNX Runtime, MatMul weights quantized to int8       ``embedplat[onnx]``
                      (dynamic, per channel)
``openvino``          OpenVINO, the model converted to OpenVINO IR, fp32   ``embedplat[model]``
``openvino-int8``     OpenVINO, quantized to int8 with NNCF, calibrated    ``embedplat[model]``
                      on embedplat's own sample texts
====================  ===================================================  ====================

Exports are made from the local model files (:mod:`embedplat.embedders.exports`) and cached.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Final

from embedplat.embedders.registry import ModelUnavailableError

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "MEASURED_DEFAULTS",
    "ModelVariant",
    "check_backend",
    "default_backend_of",
    "model_variant",
    "require_runtime",
    "runtime_modules",
    "variant_name",
]

BACKENDS: Final = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
#: The backend of a plain model name (``all-MiniLM-L6-v2`` is the torch model).
DEFAULT_BACKEND: Final = "torch"
#: The backend of a model's new collections when neither ``--backend`` nor ``EMBEDPLAT_BACKEND``
#: names one: per model, the fastest on a plain CPU among its variants that meet every quality
#: bound against torch (measured: benchmarks/RESULTS.md, "Inference backends"; the choice in
#: docs/models.md#backends). A model not listed keeps torch: its variants' quality is unmeasured.
MEASURED_DEFAULTS: Final = {"all-MiniLM-L6-v2": "openvino-int8"}
# Between a model's name and its backend in a variant's name.
SEPARATOR: Final = "@"

# The modules each backend imports, and the extra that installs them.
_RUNTIMES: Final = {
    "onnx": (("onnxruntime", "onnx"), "onnx"),
    "onnx-int8": (("onnxruntime", "onnx"), "onnx"),
    "openvino": (("openvino",), "model"),
    "openvino-int8": (("openvino", "nncf"), "model"),
}


@dataclass(frozen=True, slots=True)
class ModelVariant:
    """A model name split into the model (``base``) and the backend that runs it."""

    base: str
    backend: str

    @property
    def name(self) -> str:
        """The variant's own name: ``base`` for torch, else ``base@backend``."""
        return (
            self.base
            if self.backend == DEFAULT_BACKEND
            else f"{self.base}{SEPARATOR}{self.backend}"
        )


def default_backend_of(model: str) -> str:
    """The backend of ``model``'s new collections unless one is asked for: its entry in
    :data:`MEASURED_DEFAULTS`, else torch."""
    return MEASURED_DEFAULTS.get(model.removeprefix("sentence-transformers/"), DEFAULT_BACKEND)


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else :class:`ModelUnavailableError`."""
    if backend not in BACKENDS:
        raise ModelUnavailableError(
            f"the backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
        )
    return backend


def model_variant(name: str) -> ModelVariant:
    """Split a model name into model and backend: ``m@onnx`` is ``m`` on ONNX Runtime; a name
    without a known backend after its last ``@`` is a torch model of that whole name."""
    base, separator, backend = name.rpartition(SEPARATOR)
    if separator and base and backend in BACKENDS:
        return ModelVariant(base, backend)
    return ModelVariant(name, DEFAULT_BACKEND)


def variant_name(name: str, backend: str | None) -> str:
    """The name of model ``name`` run by ``backend`` (None: keep the backend ``name`` says).

    A name that already says a backend is refused with another one: ``m@onnx`` with
    ``openvino`` is ambiguous.
    """
    variant = model_variant(name)
    if backend is None:
        return variant.name
    check_backend(backend)
    if variant.base != name and variant.backend != backend:
        raise ModelUnavailableError(
            f"the model {name!r} already names the backend {variant.backend!r}; give the plain "
            f"model name with backend {backend!r}, or leave the backend out"
        )
    return ModelVariant(variant.base, backend).name


def runtime_modules(backend: str) -> tuple[str, ...]:
    """The modules (and PyPI distributions of the same names) that run ``backend``; none for
    torch, which the [model] extra brings."""
    return _RUNTIMES[check_backend(backend)][0] if backend != DEFAULT_BACKEND else ()


def require_runtime(backend: str) -> None:
    """Refuse (:class:`ModelUnavailableError`, naming the extra to install) a backend whose
    runtime is not installed here. Imports nothing."""
    check_backend(backend)
    if backend == DEFAULT_BACKEND:
        return
    extra = _RUNTIMES[backend][1]
    missing = [m for m in runtime_modules(backend) if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelUnavailableError(
            f"backend {backend!r} needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: "
            f"run `pip install 'embedplat[{extra}]'`"
        )
