"""Chunking time against record size: is it still about linear at 8 MB?

For sizes from 10 KB to 8 MB (the ingest limit), two shapes of real text (SciFact abstracts,
cycled past the corpus's ~7.7 MB; a synthetic vocabulary when the data is absent):
``paragraph`` (one paragraph, abstracts joined by spaces) and ``paragraphs`` (title and
abstract as paragraphs), chunked with the defaults (200 tokens, 32 overlap) by two counters:
``regex`` (the test counter) and ``model`` (the all-MiniLM-L6-v2 tokenizer, as sync uses it).
Extra shapes (``--shapes``): ``repeated`` (one sentence again and again) and ``blob`` (one
base64 word), which were the quadratic cases.

Each size is chunked 3 times: min / median / max seconds, and the exponent of a least-squares
fit of log(median) against log(size) over sizes of at least 100 KB (1 = linear, 2 =
quadratic). ``--baseline FILE`` measures another chunking module as well (for example the
chunker before its rewrite: ``git show REV:platform/embedplat/chunking.py > FILE``), up to
the size where one run first takes over ``--max-seconds``; its figures are kept in the file
when later runs measure only the current chunker.

    python -m benchmarks.bench_chunking            # all sizes, writes results/chunking.json
    python -m benchmarks.bench_chunking --quick    # 10 KB, 100 KB, 1 MB
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from embedplat import chunking
from embedplat.chunking import TokenCounter
from embedplat.embedders import load_embedder

from .common import DATA, RESULTS, write_result
from .hash_embedder import WordCounter

NAME = "chunking"
MODEL = "all-MiniLM-L6-v2"
KB = 1000
SIZES = [10 * KB, 30 * KB, 100 * KB, 300 * KB, 1000 * KB, 3000 * KB, 8000 * KB]
QUICK_SIZES = [10 * KB, 100 * KB, 1000 * KB]
SHAPES = ("paragraph", "paragraphs")
EXTRA_SHAPES = ("repeated", "blob")
COUNTERS = ("regex", "model")
RUNS = 3
FIT_FROM = 100 * KB
MAX_TOKENS, OVERLAP = 200, 32

_VOCABULARY = [
    "the",
    "cell",
    "protein",
    "gene",
    "expression",
    "patients",
    "study",
    "results",
    "increased",
    "reduced",
    "model",
    "data",
    "analysis",
    "response",
    "treatment",
    "risk",
    "cancer",
    "immune",
    "signal",
    "pathway",
    "levels",
    "significant",
    "human",
    "mouse",
    "clinical",
    "trial",
    "effect",
    "associated",
    "receptor",
    "binding",
    "growth",
    "factor",
    "tissue",
]


def _documents() -> tuple[list[tuple[str, str]], str]:
    """(title, abstract) pairs of real text, and where they came from."""
    path = DATA / "scifact" / "corpus.jsonl"
    if path.exists():
        docs = []
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                doc = json.loads(line)
                if doc.get("text"):
                    docs.append((doc.get("title") or "", doc["text"]))
        return docs, "SciFact abstracts"
    rng = random.Random(0)

    def sentence() -> str:
        words = [rng.choice(_VOCABULARY) for _ in range(rng.randint(6, 28))]
        return " ".join(words).capitalize() + "."

    docs = [
        (sentence(), " ".join(sentence() for _ in range(rng.randint(3, 12)))) for _ in range(2000)
    ]
    return docs, "synthetic sentences (../shared/data/scifact not found)"


def _cycled(docs: list[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    # Past the end of the corpus, the same abstracts again in another order.
    rng = random.Random(1)
    order = list(docs)
    while True:
        yield from order
        rng.shuffle(order)


def make_text(shape: str, size: int, docs: list[tuple[str, str]]) -> str:
    """About ``size`` characters of ``shape`` (cut at a word boundary)."""
    if shape == "repeated":
        unit = "The same sentence is said again here. "
        return (unit * (size // len(unit) + 1))[:size].rstrip()
    if shape == "blob":
        rng = random.Random(size)
        return base64.b64encode(rng.randbytes(size * 3 // 4 + 3)).decode()[:size]
    pieces: list[str] = []
    total = 0
    sep = " " if shape == "paragraph" else "\n\n"
    for title, abstract in _cycled(docs):
        piece = abstract if shape == "paragraph" else f"{title}{sep}{abstract}"
        pieces.append(piece)
        total += len(piece) + len(sep)
        if total >= size:
            break
    text = sep.join(pieces)[:size]
    return text[: text.rfind(" ")] if " " in text[-50:] else text


def today() -> str:
    return time.strftime("%Y-%m-%d")


def _counter(name: str) -> TokenCounter:
    if name == "regex":
        return WordCounter()
    return load_embedder(MODEL).token_counter()


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_chunking", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load a chunking module from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def fitted_exponent(points: list[tuple[int, float]]) -> float | None:
    """Slope of log(seconds) against log(size): 1 is linear, 2 quadratic."""
    use = [(s, t) for s, t in points if s >= FIT_FROM and t > 0]
    if len(use) < 2:
        use = [(s, t) for s, t in points if t > 0]
    if len(use) < 2:
        return None
    xs = [math.log(s) for s, _ in use]
    ys = [math.log(t) for _, t in use]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return round(slope, 2)


def measure(
    chunk_text: Callable[..., list[Any]],
    shapes: list[str],
    counters: list[str],
    sizes: list[int],
    max_seconds: float,
    docs: list[tuple[str, str]],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for counter_name in counters:
        counter = _counter(counter_name)
        for shape in shapes:
            rows: list[dict[str, Any]] = []
            for size in sizes:
                text = make_text(shape, size, docs)
                seconds: list[float] = []
                chunks = 0
                for _ in range(RUNS):
                    started = time.perf_counter()
                    chunks = len(
                        chunk_text(text, max_tokens=MAX_TOKENS, overlap=OVERLAP, counter=counter)
                    )
                    seconds.append(time.perf_counter() - started)
                    if seconds[-1] > max_seconds:
                        break  # one run is enough to say it is too slow
                row = {
                    "bytes": len(text.encode("utf-8")),
                    "chars": len(text),
                    "chunks": chunks,
                    "runs": len(seconds),
                    "min_s": round(min(seconds), 4),
                    "median_s": round(statistics.median(seconds), 4),
                    "max_s": round(max(seconds), 4),
                    "mb_per_s": round(
                        len(text.encode("utf-8")) / 1e6 / statistics.median(seconds), 3
                    ),
                }
                rows.append(row)
                print(
                    f"  {counter_name:5} {shape:10} {row['bytes'] / 1e6:8.3f} MB  "
                    f"median {row['median_s']:9.3f} s  (min {row['min_s']:.3f}, "
                    f"max {row['max_s']:.3f}, {row['runs']} runs, {chunks} chunks)",
                    flush=True,
                )
                if max(seconds) > max_seconds:
                    print(f"  ... stopped: over {max_seconds:.0f} s", flush=True)
                    break
            out.setdefault(counter_name, {})[shape] = {
                "sizes": rows,
                "exponent": fitted_exponent([(r["bytes"], r["median_s"]) for r in rows]),
            }
            print(f"  {counter_name:5} {shape:10} exponent {out[counter_name][shape]['exponent']}")
    return out


def _seconds(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if row["runs"] < RUNS:
        return f"{row['median_s']:.3g} s ({row['runs']} of {RUNS} runs: over the limit)"
    return f"{row['median_s']:.3g} s ({row['min_s']:.3g}-{row['max_s']:.3g})"


def markdown(result: dict[str, Any]) -> str:
    """Tables of median seconds (min-max of the runs) per size, current vs baseline."""
    current = result.get("current", {}).get("results", {})
    baseline = result.get("baseline", {}).get("results", {})
    out: list[str] = []
    for counter_name in COUNTERS:
        for shape in (*SHAPES, *EXTRA_SHAPES):
            entry = current.get(counter_name, {}).get(shape)
            if entry is None:
                continue
            before = baseline.get(counter_name, {}).get(shape)
            old_rows = {r["bytes"]: r for r in (before or {}).get("sizes", [])}
            out += [
                f"**{shape}**, {counter_name} counter (measured {entry['measured_at']}"
                + (f"; baseline: {before['label']}, {before['measured_at']}" if before else "")
                + ")",
                "",
                "| size | chunks | seconds, now | seconds, before | before / now |",
                "|---:|---:|---:|---:|---:|",
            ]
            for row in entry["sizes"]:
                old = old_rows.get(row["bytes"])
                ratio = f"{old['median_s'] / row['median_s']:.1f}x" if old else "-"
                out.append(
                    f"| {row['bytes'] / 1e6:.2f} MB | {row['chunks']} | {_seconds(row)} | "
                    f"{_seconds(old)} | {ratio} |"
                )
            exponent = f"fitted exponent now {entry['exponent']}"
            if before:
                exponent += f", before {before['exponent']}"
            out += ["", exponent + " (1 = linear, 2 = quadratic)", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="sizes 10 KB, 100 KB and 1 MB only")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shapes")
    parser.add_argument("--counters", default=",".join(COUNTERS), help="regex,model")
    parser.add_argument("--max-size", type=int, default=None, help="largest size in bytes")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another chunking module to measure too"
    )
    parser.add_argument("--baseline-label", default="before", help="what --baseline is")
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, help="stop growing when one run takes longer"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    shapes = [s for s in args.shapes.split(",") if s]
    unknown = set(shapes) - set(SHAPES) - set(EXTRA_SHAPES)
    if unknown:
        parser.error(f"unknown shapes: {', '.join(sorted(unknown))}")
    counters = [c for c in args.counters.split(",") if c]
    if set(counters) - set(COUNTERS):
        parser.error(f"counters are {', '.join(COUNTERS)}")
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.max_size:
        sizes = [s for s in sizes if s <= args.max_size]
    docs, source = _documents()

    setup = {
        "max_tokens": MAX_TOKENS,
        "overlap": OVERLAP,
        "runs_per_size": RUNS,
        "text": source,
        "exponent_fit": f"log(median s) vs log(bytes), sizes >= {FIT_FROM // KB} KB",
    }
    # Each (counter, shape) keeps its own date, so a run of some of them (--shapes,
    # --counters, --baseline) keeps the others' figures from the file.
    stamp = {"measured_at": today(), "quick": args.quick, "max_seconds": args.max_seconds}
    path = RESULTS / f"{NAME}.json"
    previous: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    result: dict[str, Any] = {"setup": setup}
    runs: list[tuple[str, Callable[..., list[Any]], str]] = [
        ("current", chunking.chunk_text, "this checkout")
    ]
    if args.baseline is not None:
        runs.append(("baseline", _load_module(args.baseline).chunk_text, args.baseline_label))
    for section, chunk_text, label in runs:
        print(f"{section}: {label}")
        measured = measure(chunk_text, shapes, counters, sizes, args.max_seconds, docs)
        merged: dict[str, Any] = previous.get(section, {}).get("results", {})
        for counter_name, by_shape in measured.items():
            for shape, entry in by_shape.items():
                merged.setdefault(counter_name, {})[shape] = {**stamp, "label": label, **entry}
        result[section] = {"results": merged}
    for section in ("current", "baseline"):
        if section not in result and section in previous:
            result[section] = previous[section]
    print(markdown(result))
    if not args.no_write:
        print(f"wrote {write_result(NAME, result)}")


if __name__ == "__main__":
    main()
