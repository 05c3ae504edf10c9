"""Backend exports: a sentence-transformers model turned into ONNX or OpenVINO files, made once.

An export is made from the local model files (nothing is downloaded) and cached under
``$EMBEDPLAT_HOME/exports/<source fingerprint>-<backend>/``: the model file(s), the fast
tokenizer (``tokenizer.json``) and ``manifest.json``, which says what the runtime needs (inputs,
pooling, maximum sequence length) and which fingerprint the variant has. The folder is made
under another name and renamed into place once complete, with a lock file around the whole,
so processes starting together (several workers) make it once and nobody reads half of it.

Recipes (:data:`RECIPES`) are fixed: a variant's fingerprint is the source model's fingerprint
with the backend and its recipe, so every machine that exports the same model files gets the
same variant. What each does:

* ``onnx``: ``torch.onnx.export`` of the transformer (opset 17, dynamic batch and sequence),
  whose output is the token embeddings; pooling and normalisation run in numpy.
* ``onnx-int8``: that file with ONNX Runtime's dynamic quantization of the MatMul weights to
  int8, per channel, with reduced range (the setting that keeps int8 results right on CPUs
  without VNNI; cosine to fp32 ≥ 0.98 on the built-in sample, see the tests).
* ``openvino``: ``openvino.convert_model`` of the same transformer, saved in fp32 (weights not
  compressed to fp16).
* ``openvino-int8``: that model quantized by NNCF (``ModelType.TRANSFORMER``), calibrated on
  the built-in sample texts (:func:`builtin_sample`), never on data of the user or the hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from embedplat.embedders.backends import runtime_modules
from embedplat.errors import ModelError

__all__ = [
    "RECIPES",
    "ExportManifest",
    "builtin_sample",
    "ensure_export",
    "export_folder",
    "exports_root",
    "variant_fingerprint",
]

RECIPES: Final = {
    "onnx": "onnx-fp32-opset17-r1",
    "onnx-int8": "onnx-int8-dynamic-matmul-per-channel-reduce-range-r1",
    "openvino": "openvino-fp32-r1",
    "openvino-int8": "openvino-int8-nncf-transformer-sample-r1",
}
MANIFEST: Final = "manifest.json"
_ONNX_OPSET: Final = 17
_POOLING_MODES: Final = ("mean", "cls", "max")
# The modules of a sentence-transformers model the runtimes reproduce.
_SUPPORTED_MODULES: Final = ("Transformer", "Pooling", "Normalize")
_INPUTS: Final = ("input_ids", "attention_mask", "token_type_ids")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass(frozen=True, slots=True)
class ExportManifest:
    """What an export folder holds, as written in its ``manifest.json``."""

    backend: str
    recipe: str
    source_name: str
    source_fingerprint: str
    fingerprint: str
    dimensions: int
    max_seq_length: int
    pooling: str
    input_names: tuple[str, ...]
    pad_id: int
    model_file: str
    export_id: str
    export_seconds: float
    #: The versions of the libraries that made and run it (informational: the same recipe
    #: with other versions, or on another CPU, can give slightly different int8 vectors).
    made_with: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> ExportManifest | None:
        """The manifest of ``folder``, or None when there is none or it is not one of ours."""
        try:
            raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            raw["input_names"] = tuple(raw["input_names"])
            return cls(**raw)
        except (OSError, ValueError, TypeError, KeyError):
            return None


def variant_fingerprint(source_fingerprint: str, backend: str) -> str:
    """The fingerprint of ``backend``'s variant of the model whose files hash to
    ``source_fingerprint``: it changes with the files, the backend and the recipe."""
    recipe = RECIPES[backend]
    return hashlib.sha256(f"{source_fingerprint}\0{backend}\0{recipe}".encode()).hexdigest()


def exports_root() -> Path:
    """``$EMBEDPLAT_HOME/exports``, read when called."""
    from embedplat.config import default_home

    home = os.environ.get("EMBEDPLAT_HOME")
    return (Path(home).expanduser() if home else default_home()) / "exports"


def export_folder(source_fingerprint: str, backend: str, root: Path | None = None) -> Path:
    """Where the export of a model with these files for ``backend`` is (or will be)."""
    return (root or exports_root()) / f"{source_fingerprint[:24]}-{backend}"


def builtin_sample() -> list[str]:
    """The built-in sample: the sentences of embedplat's sample corpus (``samples/``), each
    once, in file order. Calibrates ``openvino-int8`` and is what ``model bench`` embeds."""
    from embedplat.db.sqlfiles import resource_dir

    texts: list[str] = []
    seen: set[str] = set()
    path = resource_dir("embedplat.samples") / "sample_corpus.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        parts = [record.get("title") or ""]
        for paragraph in str(record.get("text") or "").split("\n"):
            parts += _SENTENCE.split(paragraph)
        for part in parts:
            part = part.strip()
            if part and part not in seen:
                seen.add(part)
                texts.append(part)
    return texts


def ensure_export(
    source_name: str,
    backend: str,
    source_fingerprint: str,
    load_source: Callable[[], Any],
    *,
    root: Path | None = None,
) -> tuple[Path, ExportManifest]:
    """The folder and manifest of ``backend``'s export of the model, made now if missing.

    ``load_source`` returns the loaded ``SentenceTransformer`` (called only to export).
    Processes and threads take turns on a lock file; the folder appears by one rename.
    """
    root = root or exports_root()
    folder = export_folder(source_fingerprint, backend, root)
    expected = variant_fingerprint(source_fingerprint, backend)
    manifest = ExportManifest.read(folder)
    if manifest is not None and manifest.fingerprint == expected:
        return folder, manifest
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{folder.name}.lock")):
        manifest = ExportManifest.read(folder)  # made by whoever held the lock before us
        if manifest is not None and manifest.fingerprint == expected:
            return folder, manifest
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
        try:
            started = time.perf_counter()
            print(
                f"embedplat: exporting {source_name} for the {backend} backend, once "
                "(cached for later processes) ...",
                file=sys.stderr,
                flush=True,
            )
            model = load_source()
            with quiet_exporters():
                facts = _export(model, backend, work)
            manifest = ExportManifest(
                backend=backend,
                recipe=RECIPES[backend],
                source_name=source_name,
                source_fingerprint=source_fingerprint,
                fingerprint=expected,
                export_id=os.urandom(8).hex(),
                export_seconds=round(time.perf_counter() - started, 3),
                made_with=_library_versions(backend),
                **facts,
            )
            data = asdict(manifest)
            data["input_names"] = list(manifest.input_names)
            # The manifest is written last: a folder without it is not a finished export.
            (work / MANIFEST).write_text(json.dumps(data, indent=2), encoding="utf-8")
            if folder.exists():  # an export of another recipe, or a damaged one
                shutil.rmtree(folder)
            os.rename(work, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return folder, manifest


def _export(model: Any, backend: str, work: Path) -> dict[str, Any]:
    """Write ``backend``'s files for the loaded sentence-transformers ``model`` into ``work``;
    returns the manifest's facts about the model."""
    facts = _model_facts(model)
    transformer = model[0].auto_model.eval()
    tokenizer = model.tokenizer
    backend_tokenizer = getattr(tokenizer, "backend_tokenizer", None)
    if backend_tokenizer is None:
        raise ModelError(
            f"backend {backend!r} needs a fast (Rust) tokenizer, and this model has none; "
            "use the torch backend"
        )
    (work / "tokenizer.json").write_text(backend_tokenizer.to_str(), encoding="utf-8")
    names = tuple(facts["input_names"])
    wrapper = _token_embeddings(transformer, names)
    example = tokenizer(
        ["an example sentence", "a second, longer example sentence for the export"],
        padding=True,
        return_tensors="pt",
    )
    inputs = tuple(example[n] for n in names)
    if backend in ("onnx", "onnx-int8"):
        fp32 = work / ("model.onnx" if backend == "onnx" else "model-fp32.onnx")
        _export_onnx(wrapper, inputs, names, fp32)
        if backend == "onnx-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                str(fp32),
                str(work / "model.onnx"),
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
                op_types_to_quantize=["MatMul"],
            )
            fp32.unlink()
        facts["model_file"] = "model.onnx"
        return facts
    import openvino as ov

    with openvino_telemetry_off():
        converted = ov.convert_model(wrapper, example_input=dict(zip(names, inputs, strict=True)))
        if backend == "openvino-int8":
            converted = _quantize_openvino(converted, tokenizer, names, facts["max_seq_length"])
    ov.save_model(converted, str(work / "model.xml"), compress_to_fp16=False)
    facts["model_file"] = "model.xml"
    return facts


def _library_versions(backend: str) -> dict[str, str]:
    """torch (which exports) and the backend's runtime modules, with their versions."""
    from importlib import metadata

    found: dict[str, str] = {}
    for name in ("torch", *runtime_modules(backend)):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _model_facts(model: Any) -> dict[str, Any]:
    kinds = [type(module).__name__ for module in model]
    unsupported = [k for k in kinds if k not in _SUPPORTED_MODULES]
    if not kinds or kinds[0] != "Transformer" or unsupported:
        raise ModelError(
            f"the ONNX and OpenVINO backends run models made of {', '.join(_SUPPORTED_MODULES)} "
            f"modules; this one has {', '.join(kinds)}: use the torch backend"
        )
    pooling = next((m for m in model if type(m).__name__ == "Pooling"), None)
    mode = str(getattr(pooling, "pooling_mode", "mean")) if pooling is not None else "mean"
    if mode not in _POOLING_MODES:
        raise ModelError(
            f"the ONNX and OpenVINO backends pool by {', '.join(_POOLING_MODES)}; this model "
            f"pools by {mode!r}: use the torch backend"
        )
    tokenizer = model.tokenizer
    accepted = _forward_inputs(model[0].auto_model)
    # In the order of the wrapper's parameters (_token_embeddings).
    names = tuple(n for n in _INPUTS if n in tokenizer.model_input_names and n in accepted)
    if "input_ids" not in names or "attention_mask" not in names:
        raise ModelError(
            "the model's tokenizer gives no input_ids and attention_mask; use the torch backend"
        )
    getter = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return {
        "dimensions": int(getter()),
        "max_seq_length": int(model.max_seq_length),
        "pooling": mode,
        "input_names": names,
        "pad_id": int(tokenizer.pad_token_id or 0),
    }


def _forward_inputs(transformer: Any) -> set[str]:
    import inspect

    return set(inspect.signature(transformer.forward).parameters)


def _token_embeddings(transformer: Any, names: Sequence[str]) -> Any:
    """A module taking ``names`` (as named parameters, for the converters) and returning the
    token embeddings."""
    import torch

    class WithTokenTypes(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    class WithoutTokenTypes(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.transformer(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state

    wrapper = WithTokenTypes() if "token_type_ids" in names else WithoutTokenTypes()
    return wrapper.eval()


def _export_onnx(wrapper: Any, inputs: tuple[Any, ...], names: Sequence[str], path: Path) -> None:
    import warnings

    import torch

    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "token_embeddings"]}
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer's warnings are about Python branches on shapes it records as constants;
        # the tests compare the exported model's vectors with torch's on texts of every length.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            inputs,
            str(path),
            input_names=list(names),
            output_names=["token_embeddings"],
            dynamic_axes=axes,
            opset_version=_ONNX_OPSET,
            dynamo=False,
        )


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """The exporters' own chatter is not for the user (the one line before an export says what
    happens): PyTorch's tracer warnings, ONNX Runtime's advice to pre-process before
    quantizing (a root-logger warning) and NNCF's progress bars (on stdout) are dropped for the
    seconds an export takes. Errors still raise."""
    previous = logging.root.manager.disable
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


@contextlib.contextmanager
def openvino_telemetry_off() -> Iterator[None]:
    """OpenVINO's converter and NNCF send usage events to Google Analytics unless a consent
    file in the user's home says no, or the process looks like CI: they decide when their
    telemetry object is made (at ``convert_model`` and at NNCF's import), and both decline
    with ``CI=true`` (openvino-telemetry's ``disable_in_ci``). An export is embedplat's work
    on the user's data: it runs with ``CI=true`` and restores the variable afterwards."""
    before = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = before


def _quantize_openvino(model: Any, tokenizer: Any, names: Sequence[str], max_length: int) -> Any:
    import nncf

    texts = builtin_sample()
    batches = []
    for i in range(0, len(texts), 16):
        encoded = tokenizer(
            texts[i : i + 16],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        batches.append({n: encoded[n].astype("int64") for n in names})
    # Its progress bars go to stdout, where --json output goes: quiet_exporters drops them.
    return nncf.quantize(
        model,
        nncf.Dataset(batches),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(batches),
    )
