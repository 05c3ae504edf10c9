"""Calibrate the near-duplicate threshold of ``embedplat.near_duplicates`` for all-MiniLM-L6-v2.

* MRPC (train split, 3,576 sentence pairs labelled paraphrase / not): cosine of the two
  sentences' embeddings; average precision, and the threshold that maximises F1.
* SICK (9,927 pairs, relatedness 1-5): Spearman correlation of cosine with relatedness, and
  the thresholds that best separate "related" pairs (relatedness >= 4, and >= 4.5) from the
  rest (maximum F1).

The default threshold of ``embedplat.near_duplicates`` / ``duplicate_groups`` is the SICK
(relatedness >= 4) best-F1 threshold rounded to two decimals, checked on MRPC: MRPC's F1 is
flat between its own best threshold and this one, and MRPC's positive rate (two thirds of its
pairs are paraphrases) pulls its best-F1 threshold down, while near-duplicates are rare in a
real collection, where precision matters more (see docs/sql.md). Embeddings are computed with
the product's own embedder (the same vectors that ``embedplat sync`` stores) and cached under
benchmarks/.work, keyed by the model's name and fingerprint and by the texts.

    python -m benchmarks.calibrate_duplicates
    python -m benchmarks.calibrate_duplicates --limit 300   # a trial run on the first pairs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any

import numpy as np

from embedplat.embedders import Embedder, load_embedder

from .common import WORK, require_data, write_result

MODEL = "all-MiniLM-L6-v2"


def embed_unique(texts: list[str], embedder: Embedder) -> dict[str, np.ndarray]:
    """Vectors of the distinct texts, cached on disk under a key of the model (name and
    fingerprint: other model files, another backend or quantization give other vectors) and
    the texts' digest."""
    unique = sorted(set(texts))
    key = hashlib.sha256()
    for part in (embedder.name, embedder.fingerprint, *unique):
        key.update(part.encode() + b"\0")
    cache = WORK / f"calibration_{key.hexdigest()[:16]}.npy"
    if cache.exists():
        vectors = np.load(cache)
    else:
        vectors = embedder.embed(unique)
        WORK.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
    return dict(zip(unique, vectors, strict=True))


def pair_cosines(pairs: list[dict[str, Any]], vectors: dict[str, np.ndarray]) -> np.ndarray:
    a = np.stack([vectors[p["a"]] for p in pairs]).astype(np.float64)
    b = np.stack([vectors[p["b"]] for p in pairs]).astype(np.float64)
    return np.asarray(
        (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)), dtype=np.float64
    )


def best_f1(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The threshold t (predict positive when score >= t) with the highest F1."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.float64)
    tp = np.cumsum(y)
    fp = np.cumsum(1 - y)
    positives = y.sum()
    # Only cut between distinct scores: a threshold cannot split tied pairs.
    last = np.r_[s[1:] != s[:-1], True]
    precision = tp / (tp + fp)
    recall = tp / positives
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(last, f1, -1.0)
    i = int(np.argmax(f1))
    # The midpoint to the next lower score generalises better than the score itself.
    threshold = float(s[i]) if i + 1 == len(s) else float((s[i] + s[i + 1]) / 2)
    return {
        "threshold": round(threshold, 4),
        "f1": round(float(f1[i]), 4),
        "precision": round(float(precision[i]), 4),
        "recall": round(float(recall[i]), 4),
    }


def f1_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall and F1 when predicting positive for score >= threshold."""
    predicted = scores >= threshold
    tp = float((predicted & labels.astype(bool)).sum())
    precision = tp / max(float(predicted.sum()), 1.0)
    recall = tp / float(labels.astype(bool).sum())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": threshold,
        "f1": round(f1, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
    }


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    y = labels[order].astype(np.float64)
    hits = np.cumsum(y)
    precision_at = hits / np.arange(1, len(y) + 1)
    return round(float((precision_at * y).sum() / y.sum()), 4)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v), dtype=np.float64)
        r[order] = np.arange(len(v), dtype=np.float64)
        # Average ranks of ties.
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=r)
        return np.asarray(sums[inverse] / counts[inverse], dtype=np.float64)

    return round(float(np.corrcoef(ranks(x), ranks(y))[0, 1]), 4)


def run(limit: int | None = None) -> dict[str, Any]:
    mrpc = [json.loads(line) for line in require_data("mrpc", "pairs.jsonl").open()][:limit]
    sick = [json.loads(line) for line in require_data("sick", "pairs.jsonl").open()][:limit]
    texts = [p[s] for p in mrpc + sick for s in ("a", "b")]
    embedder = load_embedder(MODEL)
    start = time.perf_counter()
    vectors = embed_unique(texts, embedder)
    embed_seconds = time.perf_counter() - start

    mrpc_cos = pair_cosines(mrpc, vectors)
    mrpc_labels = np.array([int(p["label"]) for p in mrpc])
    sick_cos = pair_cosines(sick, vectors)
    relatedness = np.array([float(p["relatedness"]) for p in sick])

    mrpc_best = best_f1(mrpc_cos, mrpc_labels)
    sick_best = best_f1(sick_cos, relatedness >= 4)
    default = round(sick_best["threshold"], 2)
    result: dict[str, Any] = {
        "model": MODEL,
        "model_fingerprint": embedder.fingerprint,
        "mrpc": {
            "pairs": len(mrpc),
            "positives": int(mrpc_labels.sum()),
            "average_precision": average_precision(mrpc_cos, mrpc_labels),
            "best_f1": mrpc_best,
            "at_default_threshold": f1_at(mrpc_cos, mrpc_labels, default),
        },
        "sick": {
            "pairs": len(sick),
            "spearman": spearman(sick_cos, relatedness),
            "related_ge_4": {
                "positives": int((relatedness >= 4).sum()),
                "average_precision": average_precision(sick_cos, relatedness >= 4),
                "best_f1": sick_best,
                "at_default_threshold": f1_at(sick_cos, relatedness >= 4, default),
            },
            "related_ge_4_5": {
                "positives": int((relatedness >= 4.5).sum()),
                "average_precision": average_precision(sick_cos, relatedness >= 4.5),
                "best_f1": best_f1(sick_cos, relatedness >= 4.5),
            },
        },
        "default_threshold": default,
        "texts_embedded": len(vectors),
        "embed_seconds": round(embed_seconds, 1),
        "published_reference": "MRPC test split, exact cosine: AP ≈ 0.84, best F1 ≈ 0.82 at cosine ≈ 0.64; SICK-R Spearman 0.776 (MTEB)",
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N pairs of each set (a trial run)"
    )
    args = parser.parse_args()
    result = run(args.limit)
    path = write_result("calibration", result)
    print(json.dumps(result, indent=2))
    print(path)


if __name__ == "__main__":
    main()
