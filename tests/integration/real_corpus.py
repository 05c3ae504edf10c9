"""A small real-text corpus with metadata, and exact (numpy) search over it.

Used by the search/hybrid/similar tests that check the SQL functions against exact results
computed in Python with the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg

from embedplat.api import Platform
from embedplat.db.connection import libpq_url

MODEL = "all-MiniLM-L6-v2"

TOPICS: dict[str, list[str]] = {
    "gardening": [
        "Water tomato plants deeply at the base in the early morning.",
        "Mulch keeps the soil moist and suppresses weeds around vegetables.",
        "Prune roses in late winter, cutting just above an outward-facing bud.",
        "Compost made from kitchen scraps feeds the garden for free.",
        "Aphids on the beans can be washed off with a strong jet of water.",
        "Sow lettuce every two weeks for a continuous harvest.",
        "Raised beds warm up faster in spring and drain well.",
        "Basil hates cold nights; plant it out after the last frost.",
    ],
    "astronomy": [
        "Jupiter's Great Red Spot is a storm larger than the Earth.",
        "A light-year is the distance light travels in one year.",
        "The Andromeda galaxy is approaching the Milky Way.",
        "Saturn's rings are made mostly of ice particles.",
        "A total solar eclipse happens when the Moon covers the Sun completely.",
        "Neutron stars are the collapsed cores of massive stars.",
        "Mars has the tallest volcano in the solar system, Olympus Mons.",
        "Comets grow tails of gas and dust as they approach the Sun.",
    ],
    "cooking": [
        "Sear the steak in a very hot cast-iron pan, then rest it before slicing.",
        "Knead bread dough until it is smooth and springs back when pressed.",
        "A pinch of salt makes chocolate desserts taste richer.",
        "Simmer the tomato sauce slowly so it thickens and sweetens.",
        "Toast whole spices in a dry pan to release their aroma.",
        "Risotto needs hot stock added one ladle at a time.",
        "Let pancake batter rest for ten minutes before cooking.",
        "Pickled onions are ready after a day in vinegar and sugar.",
    ],
    "finance": [
        "Index funds spread an investment across many companies at low cost.",
        "Compound interest grows savings faster the earlier you start.",
        "An emergency fund should cover three to six months of expenses.",
        "Bond prices fall when interest rates rise.",
        "Diversification reduces the risk of a single stock collapsing.",
        "Inflation erodes the purchasing power of cash over time.",
        "A budget tracks income and spending category by category.",
        "Credit card debt usually carries a high interest rate.",
    ],
}

LONG_DOCS = {
    "long-garden-kitchen": (
        "Growing your own tomatoes starts with good soil and plenty of sun. "
        "Stake the plants early and pinch out the side shoots every week.\n\n"
        "At the end of summer, turn the harvest into a slow-cooked sauce with garlic, "
        "olive oil and basil, and freeze it in jars for winter.\n\n"
        "Save a few seeds from the best fruit, dry them on paper, and sow them next spring."
    ),
    "long-space-money": (
        "Launching a satellite costs far less than it did twenty years ago thanks to reusable "
        "rockets.\n\n"
        "Investors now fund space start-ups the way they once funded software companies, "
        "accepting high risk for the chance of high returns.\n\n"
        "Telescopes in orbit have photographed thousands of planets around other stars."
    ),
}


def corpus_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for topic, texts in TOPICS.items():
        for n, text in enumerate(texts):
            rows.append(
                {
                    "id": f"{topic}-{n}",
                    "text": text,
                    "metadata": {
                        "topic": topic,
                        "year": 2015 + n,
                        "tags": [topic[:3], "even" if n % 2 == 0 else "odd"],
                        "author": {"name": f"author-{n % 3}"},
                    },
                }
            )
    for key, text in LONG_DOCS.items():
        rows.append({"id": key, "text": text, "metadata": {"topic": "mixed", "year": 2030}})
    return rows


def stored_chunks(url: str, collection: str = "docs") -> list[tuple[str, str, int, dict[str, Any]]]:
    """(external id, chunk text, ordinal, metadata) of every chunk of the collection."""
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT r.external_id, ch.content, ch.ordinal, r.metadata FROM embedplat.chunks ch "
            "JOIN embedplat.records r ON r.id = ch.record_id "
            "JOIN embedplat.collections c ON c.id = r.collection_id WHERE c.name = %s "
            "ORDER BY r.external_id, ch.ordinal",
            (collection,),
        ).fetchall()
    return [(str(r[0]), str(r[1]), int(r[2]), dict(r[3])) for r in rows]


def real_docs_collection(
    platform: Platform, url: str
) -> tuple[list[tuple[str, str, int, dict[str, Any]]], np.ndarray]:
    """Collection ``docs`` of :func:`corpus_rows`, synced with :data:`MODEL` in 40-token chunks:
    its stored chunks and their vectors, embedded again in Python."""
    platform.create_collection("docs", model=MODEL, chunk_tokens=40, chunk_overlap=0)
    platform.ingest("docs", corpus_rows())
    platform.sync("docs")
    chunks = stored_chunks(url)
    return chunks, platform.embedder(MODEL).embed([c[1] for c in chunks])


def exact_search(
    chunks: list[tuple[str, str, int, dict[str, Any]]],
    vectors: np.ndarray,
    query: np.ndarray,
    k: int,
    *,
    per_record: bool = True,
    keep: Callable[[dict[str, Any]], bool] = lambda m: True,
    exclude: str | None = None,
) -> list[tuple[str, float, int]]:
    """(id, cosine similarity, chunk ordinal), best first: what embedplat.search should return."""
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(query)
    sims = (vectors @ query) / norms
    order = np.argsort(-sims, kind="stable")
    out: list[tuple[str, float, int]] = []
    seen: set[str] = set()
    for i in order:
        rid, _, ordinal, metadata = chunks[i]
        if rid == exclude or not keep(metadata) or (per_record and rid in seen):
            continue
        seen.add(rid)
        out.append((rid, float(sims[i]), ordinal))
        if len(out) == k:
            break
    return out


def assert_same_ranking(
    got: list[tuple[str, float, int]], want: list[tuple[str, float, int]], tol: float = 1e-4
) -> None:
    """Same length, same similarities; the same ids wherever similarities are not tied."""
    assert len(got) == len(want), (got, want)
    for (gid, gsim, gord), (wid, wsim, word) in zip(got, want, strict=True):
        assert abs(gsim - wsim) < tol, (got, want)
        tied = sum(1 for _, s, _ in want if abs(s - wsim) < tol) > 1
        if not tied:
            assert (gid, gord) == (wid, word), (got, want)
