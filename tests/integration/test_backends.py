"""ONNX Runtime and OpenVINO backends of the real all-MiniLM-L6-v2, offline from its bundled
files: vectors within the documented bounds of torch's, their own fingerprints and names, the
export made once when two processes start together, and collections that use a variant (sync,
search, the refusal of another variant's query vector, the switch from torch and back).

Each backend needs its runtime (the [onnx] and [model] extras, which scripts/test
installs); without it the backend's tests are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedplat.api import Platform
from embedplat.config import DEFAULT_MODEL, Settings
from embedplat.embedders import ModelUnavailableError, load_embedder
from embedplat.embedders.backends import default_backend_of
from embedplat.embedders.exports import builtin_sample, export_folder, variant_fingerprint
from embedplat.embedders.runtime import RuntimeEmbedder
from embedplat.errors import ModelMismatchError
from embedplat.ingest import RecordInput
from embedplat.search import search_vector
from tests.fix_cli import documented_keys, run
from tests.fix_embedders import plugin_env

pytestmark = pytest.mark.model

# Per backend: the least median and 1st-percentile cosine to torch's vectors (issue bounds:
# median >= 0.99, 1st percentile >= 0.97; the fp32 exports must agree to rounding).
BOUNDS = {
    "onnx": (0.9999, 0.9999),
    "onnx-int8": (0.99, 0.97),
    "openvino": (0.9999, 0.9999),
    "openvino-int8": (0.99, 0.97),
}
# The least cosine between two vectors of one text embedded in different batches.
SAME_TEXT_AGREEMENT = {
    "onnx": 0.99999,
    "onnx-int8": 0.99,
    "openvino": 0.99999,
    "openvino-int8": 0.9999,
}
_RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}


def _need_runtime(backend: str) -> None:
    module = _RUNTIMES[backend.removesuffix("-int8")]
    if importlib.util.find_spec(module) is None:
        extra = "onnx" if backend.startswith("onnx") else "model"
        pytest.skip(f"{module} is not installed (pip install 'embedplat[{extra}]')")


@pytest.fixture(scope="module")
def export_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One EMBEDPLAT_HOME for the module: each backend is exported once."""
    home = tmp_path_factory.mktemp("exports-home")
    saved = os.environ.get("EMBEDPLAT_HOME")
    os.environ["EMBEDPLAT_HOME"] = str(home)
    try:
        yield home
    finally:
        if saved is None:
            os.environ.pop("EMBEDPLAT_HOME", None)
        else:
            os.environ["EMBEDPLAT_HOME"] = saved


def _texts() -> list[str]:
    sample = builtin_sample()
    # Long texts too: past the model's 256 tokens, truncation must match torch's.
    long = [" ".join(sample[i : i + 30]) for i in range(0, 120, 30)]
    return sample + long + ["", "x", "Ünïcödé — 日本語のテキスト 🙂"]


@pytest.mark.parametrize("backend", list(BOUNDS))
def test_each_backend_gives_vectors_close_to_torch(
    export_home: Path, backend: str, capfd: pytest.CaptureFixture[str]
) -> None:
    _need_runtime(backend)
    texts = _texts()
    torch_embedder = load_embedder(DEFAULT_MODEL)
    reference = torch_embedder.embed(texts)
    capfd.readouterr()
    exported_before = any((export_home / "exports").glob(f"*-{backend}"))
    embedder = load_embedder(f"{DEFAULT_MODEL}@{backend}")  # exported now
    # Nothing on stdout (where `--json` goes), the exporters' and quantizers' chatter included;
    # on stderr one line says what happens, and the libraries' warnings and bars are dropped.
    captured = capfd.readouterr()
    assert captured.out == ""
    if not exported_before:
        assert f"exporting {DEFAULT_MODEL} for the {backend} backend" in captured.err
        for chatter in ("TracerWarning", "Statistics collection", "pre-processing"):
            assert chatter not in captured.err, captured.err
    assert isinstance(embedder, RuntimeEmbedder)
    assert embedder.name == f"{DEFAULT_MODEL}@{backend}"
    assert embedder.dimensions == 384
    vectors = embedder.embed(texts)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(vectors * reference, axis=1)
    median_bound, p1_bound = BOUNDS[backend]
    assert float(np.median(cosine)) >= median_bound, backend
    assert float(np.percentile(cosine, 1)) >= p1_bound, backend
    # A small call (a search's query) runs on one thread: the same vectors, up to rounding;
    # onnx-int8's dynamic quantization scales activations per batch, so there a text's vector
    # depends a little on the texts batched with it.
    small = embedder.embed(texts[:3])
    agreement = np.sum(small * vectors[:3], axis=1)
    assert agreement.min() >= SAME_TEXT_AGREEMENT[backend], agreement
    # Order is kept: each text's vector is nearest to torch's vector of the same text.
    assert (np.argmax(vectors @ reference.T, axis=1) == np.arange(len(texts)))[:-3].all()
    # Its own model: another fingerprint than torch's, and the one its recipe stands for.
    assert embedder.fingerprint != torch_embedder.fingerprint
    assert embedder.fingerprint == variant_fingerprint(torch_embedder.fingerprint, backend)
    # Chunking counts the same tokens as with torch.
    assert embedder.token_counter().count_tokens(texts) == (
        torch_embedder.token_counter().count_tokens(texts)
    )
    folder = export_folder(torch_embedder.fingerprint, backend, export_home / "exports")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["backend"] == backend
    assert manifest["made_with"]["torch"]  # the versions that made it, for the record


_LOAD_IN_CHILD = """
import json, sys
from embedplat.embedders import ModelUnavailableError, load_embedder
from embedplat.embedders.backends import default_backend_of
e = load_embedder(sys.argv[1])
v = e.embed(["the same sentence in two processes"])
print(json.dumps({"export_id": e.manifest.export_id, "fingerprint": e.fingerprint,
                  "vector": [round(float(x), 5) for x in v[0][:8]]}))
"""


def test_two_processes_starting_together_export_once(tmp_path: Path) -> None:
    _need_runtime("onnx")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDPLAT_")}
    env.update(HF_HUB_OFFLINE="1", EMBEDPLAT_HOME=str(tmp_path / "home"))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _LOAD_IN_CHILD, f"{DEFAULT_MODEL}@onnx"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    # One export, read by both: the same export id, fingerprint and vectors.
    assert outputs[0] == outputs[1]
    exports = tmp_path / "home" / "exports"
    folders = [p for p in exports.iterdir() if p.is_dir()]
    assert [p.name.split("-", 1)[1] for p in folders] == ["onnx"]
    # No half-made folder left behind.
    assert not [p for p in exports.iterdir() if p.name.startswith(".") and p.is_dir()]


def test_a_collection_on_a_variant_syncs_searches_and_refuses_other_variants(
    db_url: str, settings: Settings, export_home: Path
) -> None:
    _need_runtime("onnx")
    with Platform(db_url, settings) as platform:
        info = platform.create_collection("docs", backend="onnx-int8")
        assert info.model_name == f"{DEFAULT_MODEL}@onnx-int8"
        texts = {
            "a": "Water tomato plants at the root in the morning.",
            "b": "PostgreSQL indexes speed up lookups by key.",
            "c": "A B-tree keeps keys sorted for range scans.",
        }
        platform.ingest_records(
            "docs", [RecordInput(k, v, {}, "<python>", None) for k, v in texts.items()]
        )
        report = platform.sync("docs")
        assert report.chunks_embedded == 3
        hits = platform.search("docs", "how should I water tomatoes", k=2)
        assert hits[0].id == "a"
        # The stored model is the variant, with the variant's fingerprint.
        with platform.connection() as conn:
            row = conn.execute(
                "SELECT m.name, m.fingerprint FROM embedplat.collections c "
                "JOIN embedplat.embedding_models m ON m.id = c.active_model_id "
                "WHERE c.name = 'docs'"
            ).fetchone()
        variant = load_embedder(f"{DEFAULT_MODEL}@onnx-int8")
        assert row == (f"{DEFAULT_MODEL}@onnx-int8", variant.fingerprint)
        # A query vector of the torch model is refused, naming both models.
        torch_vector = load_embedder(DEFAULT_MODEL).embed(["water tomatoes"])[0]
        torch_fingerprint = load_embedder(DEFAULT_MODEL).fingerprint
        with platform.connection() as conn, pytest.raises(ModelMismatchError, match="onnx-int8"):
            search_vector(
                conn,
                "docs",
                torch_vector,
                k=2,
                query_model=DEFAULT_MODEL,
                query_fingerprint=torch_fingerprint,
            )
        # From the int8 variant to torch through a switch: every chunk is embedded again.
        started = platform.switch_model("docs", DEFAULT_MODEL, backend="torch")
        assert started.to_model == DEFAULT_MODEL
        assert started.chunks_queued == 3
        platform.sync("docs")
        assert platform.collection("docs").model_name == DEFAULT_MODEL
        assert platform.search("docs", "sorted keys for range scans", k=1)[0].id == "c"


def test_the_backend_setting_and_the_cli(db_url: str, export_home: Path) -> None:
    _need_runtime("onnx")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDPLAT_")}
    env.update(
        HF_HUB_OFFLINE="1",
        EMBEDPLAT_DATABASE_URL=db_url,
        EMBEDPLAT_HOME=str(export_home),
        EMBEDPLAT_BACKEND="onnx",
    )
    # EMBEDPLAT_BACKEND is the default of new collections, ingest's included ...
    created = json.loads(run(["collection", "create", "a", "--json"], env).stdout)
    assert created["model"] == f"{DEFAULT_MODEL}@onnx"
    run(["ingest", "b", "-"], env, stdin='{"id": "1", "text": "hello"}\n')
    # ... --backend wins over it, and a name that says its backend keeps it.
    c = json.loads(run(["collection", "create", "c", "--backend", "torch", "--json"], env).stdout)
    assert c["model"] == DEFAULT_MODEL
    named = ["collection", "create", "d", "--model", f"{DEFAULT_MODEL}@onnx-int8", "--json"]
    assert json.loads(run(named, env).stdout)["model"] == f"{DEFAULT_MODEL}@onnx-int8"
    listed = {
        c["name"]: c["model"]
        for c in json.loads(run(["collection", "list", "--json"], env).stdout)["collections"]
    }
    assert listed["b"] == f"{DEFAULT_MODEL}@onnx"
    bad = run(["collection", "create", "e", "--backend", "tensorrt"], env, check=False)
    assert bad.returncode == 2 and "tensorrt" in bad.stderr
    wrong = dict(env, EMBEDPLAT_BACKEND="gpu")
    refused = run(["collection", "create", "f"], wrong, check=False)
    assert refused.returncode != 0 and "EMBEDPLAT_BACKEND must be one of" in refused.stderr
    # model list shows each variant with its backend.
    models = json.loads(run(["model", "list", "--json"], env).stdout)["models"]
    by_name = {m["name"]: m for m in models}
    assert by_name[f"{DEFAULT_MODEL}@onnx"]["backend"] == "onnx"
    assert by_name[DEFAULT_MODEL]["backend"] == "torch"
    assert by_name[f"{DEFAULT_MODEL}@onnx"]["fingerprint"] != by_name[DEFAULT_MODEL]["fingerprint"]
    # model bench: texts/s and cosines per backend, keys as documented.
    bench = json.loads(
        run(
            ["model", "bench", DEFAULT_MODEL, "--backend", "onnx", "--runs", "1", "--json"], env
        ).stdout
    )
    assert [b["backend"] for b in bench["backends"]] == ["torch", "onnx"]
    onnx = bench["backends"][1]
    assert onnx["texts_per_second"]["median"] > 0
    assert onnx["cosine_to_torch"]["median"] >= 0.9999
    assert set(bench) <= documented_keys("model bench")
    assert set(onnx) <= documented_keys("model bench")


def test_attach_with_a_backend_makes_a_collection_on_the_variant(
    db_url: str, settings: Settings
) -> None:
    _need_runtime("onnx")
    with Platform(db_url, settings) as platform:
        with platform.connection() as conn:
            conn.execute("CREATE TABLE public.articles (id int PRIMARY KEY, body text)")
            conn.execute("INSERT INTO public.articles VALUES (1, 'Prune roses in March.')")
        report = platform.attach(
            "articles", "public.articles", text_columns=["body"], backend="onnx-int8"
        )
        assert report.records_inserted == 1
        assert platform.collection("articles").model_name == f"{DEFAULT_MODEL}@onnx-int8"
        # A model name that says its backend, with another --backend: refused, nothing made.
        with pytest.raises(ModelUnavailableError, match="already names the backend"):
            platform.create_collection("b", model=f"{DEFAULT_MODEL}@onnx", backend="openvino")
        assert [c.name for c in platform.collections()] == ["articles"]


def test_new_collections_of_the_default_model_run_on_its_measured_default(
    db_url: str, export_home: Path, tmp_path: Path
) -> None:
    """No --backend and no EMBEDPLAT_BACKEND: all-MiniLM-L6-v2's new collections are its int8
    OpenVINO variant (backends.MEASURED_DEFAULTS), the quick start's job works on it end to end,
    a model without a measured default keeps its plain name, and existing collections keep
    their model."""
    _need_runtime("openvino-int8")
    expected = f"{DEFAULT_MODEL}@{default_backend_of(DEFAULT_MODEL)}"
    assert expected == f"{DEFAULT_MODEL}@openvino-int8"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDPLAT_")}
    env.update(HF_HUB_OFFLINE="1", EMBEDPLAT_DATABASE_URL=db_url, EMBEDPLAT_HOME=str(export_home))
    env.update(plugin_env())
    # A collection made before, on torch, keeps its model.
    old = ["collection", "create", "old", "--backend", "torch", "--json"]
    assert json.loads(run(old, env).stdout)["model"] == DEFAULT_MODEL
    created = json.loads(run(["collection", "create", "a", "--json"], env).stdout)
    assert created["model"] == expected
    records = "".join(
        json.dumps({"id": k, "text": v}) + "\n"
        for k, v in {
            "roses": "Prune roses in late winter, just above an outward-facing bud.",
            "btree": "A B-tree index keeps keys sorted, so range scans read few pages.",
        }.items()
    )
    run(["ingest", "docs", "-"], env, stdin=records)  # created by ingest: the default too
    synced = json.loads(run(["sync", "docs", "--json"], env).stdout)
    assert synced["chunks_embedded"] == 2
    found = json.loads(
        run(["search", "docs", "when to cut back rose bushes", "--json"], env).stdout
    )
    assert found["hits"][0]["id"] == "roses"
    plugin = ["collection", "create", "h", "--model", "test-hash-8", "--json"]
    assert json.loads(run(plugin, env).stdout)["model"] == "test-hash-8"
    listed = {
        c["name"]: c["model"]
        for c in json.loads(run(["collection", "list", "--json"], env).stdout)["collections"]
    }
    assert listed == {"old": DEFAULT_MODEL, "a": expected, "docs": expected, "h": "test-hash-8"}
    # The Python facade's default is the same one.
    with Platform(db_url, Settings(database_url=None, home=tmp_path / "home")) as platform:
        assert platform.create_collection("p").model_name == expected
        # A query vector for SQL comes from the collection's own variant.
        query = platform.embed_query("p", "when to cut back rose bushes")
        np.testing.assert_array_equal(
            query, load_embedder(expected).embed(["when to cut back rose bushes"])[0]
        )
        torch_query = platform.embed_query("old", "when to cut back rose bushes")
        np.testing.assert_array_equal(
            torch_query, load_embedder(DEFAULT_MODEL).embed(["when to cut back rose bushes"])[0]
        )
        assert not np.array_equal(query, torch_query)
