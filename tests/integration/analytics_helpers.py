"""Helpers for the near-duplicate, anomaly and export tests: stored vectors and the exact
(numpy) definitions the SQL functions must reproduce (syncs and plans: search_helpers)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import psycopg

from embedplat.db.connection import libpq_url
from tests.fix_embedders import HashEmbedder


def distinct_words(n: int, dimensions: int = 64) -> list[str]:
    """``n`` words that the test embedder maps to ``n`` different dimensions.

    A text of m such words then has entries of exactly ±1/sqrt(m), so cosines between such
    texts are exact fractions (3 shared words of 4: exactly 0.75).
    """
    embedder = HashEmbedder(dimensions)
    words: list[str] = []
    used: set[int] = set()
    i = 0
    while len(words) < n:
        word = f"word{i}"
        i += 1
        dim = int(np.flatnonzero(embedder.embed([word])[0])[0])
        if dim not in used:
            used.add(dim)
            words.append(word)
    return words


def stored_chunk_vectors(url: str, collection: str) -> dict[str, list[np.ndarray]]:
    """Each record's chunk vectors (active model) in chunk order, as stored."""
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT r.external_id, e.embedding::real[] FROM embedplat.embeddings e "
            "JOIN embedplat.chunks ch ON ch.id = e.chunk_id "
            "JOIN embedplat.records r ON r.id = e.record_id "
            "JOIN embedplat.collections c ON c.id = e.collection_id "
            "AND c.active_model_id = e.model_id "
            "WHERE c.name = %s ORDER BY r.external_id, ch.ordinal",
            (collection,),
        ).fetchall()
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for rid, vec in rows:
        out[str(rid)].append(np.asarray(vec, dtype=np.float64))
    return dict(out)


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.linalg.norm(v, axis=-1, keepdims=True), dtype=np.float64)


def record_similarity(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The documented record similarity: least of the two directions' mean best-chunk cosine."""
    sims = _unit(np.stack(a)) @ _unit(np.stack(b)).T
    return float(min(sims.max(axis=1).mean(), sims.max(axis=0).mean()))


def exact_pairs(
    vectors: dict[str, list[np.ndarray]],
    contents: dict[str, str],
    threshold: float,
) -> dict[tuple[str, str], float]:
    """Every pair (a < b) with record similarity >= threshold; identical content: 1."""
    ids = sorted(contents)
    out: dict[tuple[str, str], float] = {}
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            if contents[a] == contents[b]:
                out[(a, b)] = 1.0
            elif a in vectors and b in vectors:
                sim = record_similarity(vectors[a], vectors[b])
                if sim >= threshold:
                    out[(a, b)] = sim
    return out


def components(pairs: list[tuple[str, str]]) -> list[set[str]]:
    """Connected components of the pair graph."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, set[str]] = defaultdict(set)
    for x in list(parent):
        groups[find(x)].add(x)
    return list(groups.values())


def exact_anomaly_scores(
    vectors: dict[str, list[np.ndarray]],
    k: int,
    reference: dict[str, list[np.ndarray]] | None = None,
) -> dict[str, float]:
    """The documented score: per chunk, the mean distance to its k nearest other records
    (each at its closest chunk); per record, the mean over its chunks."""
    refs = vectors if reference is None else reference
    ref_ids = sorted(refs)
    ref_matrix = _unit(np.vstack([np.stack(refs[r]) for r in ref_ids]))
    owner = np.array([r for r in ref_ids for _ in refs[r]])
    scores: dict[str, float] = {}
    for rid, chunks in vectors.items():
        chunk_scores = []
        for chunk in chunks:
            distances = 1 - ref_matrix @ _unit(chunk)
            per_record: dict[str, float] = {}
            for other, d in zip(owner, distances, strict=True):
                if other == rid:
                    continue
                per_record[str(other)] = min(per_record.get(str(other), 2.0), float(d))
            nearest = sorted(per_record.values())[:k]
            if nearest:
                chunk_scores.append(float(np.mean(nearest)))
        if chunk_scores:
            scores[rid] = float(np.mean(chunk_scores))
    return scores
