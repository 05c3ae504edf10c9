"""Backend names and variants: how a model name says its backend, the setting, the refusals."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from embedplat.cli.options import BackendChoice
from embedplat.config import Settings
from embedplat.embedders import ModelUnavailableError
from embedplat.embedders.backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    MEASURED_DEFAULTS,
    ModelVariant,
    check_backend,
    default_backend_of,
    model_variant,
    require_runtime,
    variant_name,
)
from embedplat.embedders.exports import RECIPES, builtin_sample, variant_fingerprint
from embedplat.errors import ConfigurationError
from embedplat.models import ModelRegistrationError, validate_model_name


def test_the_cli_offers_exactly_the_backends() -> None:
    assert tuple(c.value for c in BackendChoice) == BACKENDS
    assert set(RECIPES) == set(BACKENDS) - {DEFAULT_BACKEND}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("all-MiniLM-L6-v2", ModelVariant("all-MiniLM-L6-v2", "torch")),
        ("all-MiniLM-L6-v2@onnx", ModelVariant("all-MiniLM-L6-v2", "onnx")),
        ("org/model@openvino-int8", ModelVariant("org/model", "openvino-int8")),
        ("all-MiniLM-L6-v2@torch", ModelVariant("all-MiniLM-L6-v2", "torch")),
        # Not a backend after the last @: the whole name is the model's.
        ("/models/me@work", ModelVariant("/models/me@work", "torch")),
        ("@onnx", ModelVariant("@onnx", "torch")),
        ("m@onnx@openvino", ModelVariant("m@onnx", "openvino")),
    ],
)
def test_a_name_splits_into_model_and_backend(name: str, expected: ModelVariant) -> None:
    assert model_variant(name) == expected


def test_variant_names() -> None:
    assert variant_name("m", "onnx") == "m@onnx"
    assert variant_name("m", "torch") == "m"
    assert variant_name("m", None) == "m"
    assert variant_name("m@onnx", None) == "m@onnx"
    assert variant_name("m@onnx", "onnx") == "m@onnx"
    assert variant_name("m@torch", None) == "m"
    with pytest.raises(ModelUnavailableError, match="already names the backend 'onnx'"):
        variant_name("m@onnx", "openvino")
    with pytest.raises(ModelUnavailableError, match="already names the backend 'torch'"):
        variant_name("m@torch", "openvino")
    with pytest.raises(ModelUnavailableError, match="must be one of torch, onnx"):
        variant_name("m", "tensorrt")
    with pytest.raises(ModelUnavailableError, match="got 'ONNX'"):
        check_backend("ONNX")


def test_the_backend_setting() -> None:
    # Unset: each model's measured default decides (default_backend_of).
    assert Settings.from_env({}).backend is None
    assert Settings().backend is None
    assert Settings.from_env({"EMBEDPLAT_BACKEND": "openvino-int8"}).backend == "openvino-int8"
    assert Settings.from_env({"EMBEDPLAT_BACKEND": "torch"}).backend == "torch"
    assert Settings.from_env({"EMBEDPLAT_BACKEND": " "}).backend is None
    with pytest.raises(ConfigurationError, match=r"EMBEDPLAT_BACKEND must be one of .* 'gpu'"):
        Settings.from_env({"EMBEDPLAT_BACKEND": "gpu"})


def test_the_measured_default_backend_is_per_model() -> None:
    # all-MiniLM-L6-v2's int8 OpenVINO variant met every quality bound and was the fastest on
    # a plain CPU (benchmarks/RESULTS.md); a model whose variants were never measured keeps
    # torch.
    assert default_backend_of("all-MiniLM-L6-v2") == "openvino-int8"
    assert default_backend_of("sentence-transformers/all-MiniLM-L6-v2") == "openvino-int8"
    assert default_backend_of("all-mpnet-base-v2") == "torch"
    assert default_backend_of("my-registered-model") == "torch"
    assert set(MEASURED_DEFAULTS.values()) <= set(BACKENDS)


def test_a_missing_runtime_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def without(name: str, *args: Any) -> Any:
        return None if name in ("openvino", "nncf") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without)
    require_runtime("torch")
    with pytest.raises(ModelUnavailableError) as caught:
        require_runtime("openvino-int8")
    message = str(caught.value)
    assert "openvino and nncf, which are not installed" in message
    assert "pip install 'embedplat[model]'" in message


def test_a_variant_fingerprint_depends_on_files_backend_and_recipe() -> None:
    prints = {variant_fingerprint("a" * 64, b) for b in RECIPES}
    assert len(prints) == len(RECIPES)
    assert variant_fingerprint("a" * 64, "onnx") != variant_fingerprint("b" * 64, "onnx")
    assert variant_fingerprint("a" * 64, "onnx") == variant_fingerprint("a" * 64, "onnx")


def test_the_builtin_sample_is_fixed_text() -> None:
    first, second = builtin_sample(), builtin_sample()
    assert first == second
    assert len(first) >= 150
    assert len(set(first)) == len(first)
    assert all(t == t.strip() and t for t in first)


def test_a_registered_name_may_not_say_a_backend() -> None:
    with pytest.raises(ModelRegistrationError, match="may not contain '@'"):
        validate_model_name("my-model@onnx")


def test_the_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from embedplat.embedders.runtime import default_threads

    monkeypatch.delenv("EMBEDPLAT_THREADS", raising=False)
    assert default_threads() >= 1
    monkeypatch.setenv("EMBEDPLAT_THREADS", "3")
    assert default_threads() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("EMBEDPLAT_THREADS", bad)
        with pytest.raises(ConfigurationError, match="EMBEDPLAT_THREADS"):
            default_threads()


_TELEMETRY_PROBE = """
import os, sys
from openvino.tools.ovc.telemetry_utils import init_ovc_telemetry
from embedplat.embedders.exports import openvino_telemetry_off
if sys.argv[1] == "export":
    with openvino_telemetry_off():
        consent = init_ovc_telemetry().consent
else:
    consent = init_ovc_telemetry().consent
print(consent, os.environ.get("CI"))
"""


@pytest.mark.parametrize(
    ("mode", "ci", "printed"),
    [
        ("export", None, "False None"),
        ("export", "nope", "False nope"),
        ("plain", None, "True None"),
    ],
)
def test_openvino_exports_run_with_openvino_and_nncf_telemetry_declined(
    tmp_path: Path, mode: str, ci: str | None, printed: str
) -> None:
    """OpenVINO's converter (and NNCF, which asks the same way) decide once per process
    whether to send usage events: yes when no consent file exists and the process does not
    look like CI ("plain", the control). An export declines, and leaves CI as it was. Each
    case in a fresh process: the decision is a process-wide singleton."""
    pytest.importorskip("openvino_telemetry", reason="needs OpenVINO (the [model] extra)")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["HOME"] = str(tmp_path)  # no consent file here
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run(
        [sys.executable, "-c", _TELEMETRY_PROBE, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == printed
