"""Backend names and variants: how a model name says its backend, the setting, the refusals."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from embedplat.cli.options import BackendChoice
from embedplat.config import Settings
from embedplat.embedders import ModelUnavailableError
from embedplat.embedders.backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    ModelVariant,
    check_backend,
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
    assert Settings.from_env({}).backend == "torch"
    assert Settings.from_env({"EMBEDPLAT_BACKEND": "openvino-int8"}).backend == "openvino-int8"
    assert Settings.from_env({"EMBEDPLAT_BACKEND": " "}).backend == "torch"
    with pytest.raises(ConfigurationError, match=r"EMBEDPLAT_BACKEND must be one of .* 'gpu'"):
        Settings.from_env({"EMBEDPLAT_BACKEND": "gpu"})


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
    assert "pip install 'embedplat[openvino]'" in message


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
