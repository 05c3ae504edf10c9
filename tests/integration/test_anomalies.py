"""embedplat.anomaly_scores: exact results, planted outliers first, reference-collection novelty
(a spam cluster hides from within-collection scores but not from reference scores), rank and
percentile, model checks, index use, hostile input."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest

from embedplat.analytics import AnomalyScore
from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.errors import CollectionNotFoundError, InvalidInputError, ModelMismatchError
from tests.fix_cli import _env, run

from .analytics_helpers import (
    distinct_words,
    exact_anomaly_scores,
    stored_chunk_vectors,
)
from .real_corpus import TOPICS
from .search_helpers import hash_sync, plans

MODEL = "all-MiniLM-L6-v2"
HASH = "test-hash-64"


def _check_exact(got: list[AnomalyScore], want: dict[str, float], tol: float = 1e-5) -> None:
    assert {s.id for s in got} == set(want)
    for s in got:
        assert s.score == pytest.approx(want[s.id], abs=tol), s.id
    assert [s.rank for s in got] == list(range(1, len(got) + 1))
    assert [s.score for s in got] == sorted((s.score for s in got), reverse=True)


# -- the real model ------------------------------------------------------------------------------


@pytest.mark.model
def test_planted_outliers_rank_first_and_scores_are_exact(platform: Platform, db_url: str) -> None:
    rows = {f"{t}-{n}": text for t in ("cooking", "gardening") for n, text in enumerate(TOPICS[t])}
    rows["outlier-1"] = TOPICS["astronomy"][0]
    rows["outlier-2"] = TOPICS["astronomy"][5]
    platform.create_collection("mixed", model=MODEL)
    platform.ingest("mixed", [{"id": k, "text": v} for k, v in rows.items()])
    platform.sync("mixed")
    scores = platform.anomaly_scores("mixed", k=3)
    _check_exact(scores, exact_anomaly_scores(stored_chunk_vectors(db_url, "mixed"), 3))
    assert {s.id for s in scores[:2]} == {"outlier-1", "outlier-2"}
    assert scores[0].percentile == 100.0
    assert [s.id for s in platform.anomaly_scores("mixed", k=3, top=2)] == [
        s.id for s in scores[:2]
    ]


NEW_NORMAL = [
    "Plant garlic cloves in autumn for a summer harvest.",
    "Water seedlings gently so the soil does not wash away.",
    "Roast the vegetables with olive oil until golden.",
    "Whisk the eggs with a little milk for fluffy omelettes.",
    "Harvest courgettes while they are small and tender.",
    "Bake the bread until it sounds hollow when tapped.",
]
SPAM = [
    "WIN a FREE iPhone today!!! Click the link now to claim your prize.",
    "Congratulations, you WON a free iPhone! Click this link to claim your prize now.",
    "FREE iPhone winner! Claim your prize now by clicking the link.",
    "You have won a FREE iPhone!!! Click now to claim the prize.",
]


@pytest.mark.model
def test_a_spam_cluster_hides_within_the_collection_but_not_from_a_reference(
    platform: Platform, db_url: str
) -> None:
    platform.create_collection("trusted", model=MODEL)
    platform.ingest(
        "trusted",
        [
            {"id": f"{t}-{n}", "text": text}
            for t in ("cooking", "gardening")
            for n, text in enumerate(TOPICS[t])
        ],
    )
    platform.create_collection("incoming", model=MODEL)
    platform.ingest(
        "incoming",
        [{"id": f"normal-{n}", "text": t} for n, t in enumerate(NEW_NORMAL)]
        + [{"id": f"spam-{n}", "text": t} for n, t in enumerate(SPAM)],
    )
    platform.sync()
    spam = {f"spam-{n}" for n in range(len(SPAM))}
    incoming = stored_chunk_vectors(db_url, "incoming")
    trusted = stored_chunk_vectors(db_url, "trusted")

    within = platform.anomaly_scores("incoming", k=3)
    _check_exact(within, exact_anomaly_scores(incoming, 3))
    # The spam records are each other's nearest neighbours: they look *least* anomalous.
    assert {s.id for s in within[-len(SPAM) :]} == spam

    novelty = platform.anomaly_scores("incoming", k=3, reference="trusted")
    _check_exact(novelty, exact_anomaly_scores(incoming, 3, reference=trusted))
    assert {s.id for s in novelty[: len(SPAM)]} == spam


# -- test embedder: definitions, ranks, errors ---------------------------------------------------


def _random_rows(n: int, seed: int = 5) -> list[dict[str, str]]:
    words = distinct_words(40)
    rng = np.random.default_rng(seed)
    return [{"id": f"r{i:04d}", "text": " ".join(rng.choice(words, 6))} for i in range(n)]


def test_multi_chunk_records_follow_the_documented_definition(
    platform: Platform, db_url: str
) -> None:
    w = distinct_words(30)
    rng = np.random.default_rng(9)

    def para() -> str:
        return " ".join(rng.choice(w, 5))

    rows = {f"doc-{i}": "\n\n".join(para() for _ in range(1 + i % 3)) for i in range(12)}
    platform.create_collection("long", model=HASH, chunk_tokens=8, chunk_overlap=0)
    platform.ingest("long", [{"id": k, "text": v} for k, v in rows.items()])
    hash_sync(db_url, "long")
    vectors = stored_chunk_vectors(db_url, "long")
    assert max(len(v) for v in vectors.values()) == 3
    for k in (1, 2):
        _check_exact(platform.anomaly_scores("long", k=k), exact_anomaly_scores(vectors, k))


def test_rank_percentile_and_top(platform: Platform, db_url: str) -> None:
    platform.create_collection("docs", model=HASH)
    platform.ingest("docs", _random_rows(100))
    hash_sync(db_url, "docs")
    scores = platform.anomaly_scores("docs", k=5)
    _check_exact(scores, exact_anomaly_scores(stored_chunk_vectors(db_url, "docs"), 5))
    assert len(scores) == 100
    assert scores[0].percentile == 100.0 and scores[-1].percentile == 0.0
    # percent_rank: the share of the other records with a lower score.
    for s in scores:
        lower = sum(1 for o in scores if o.score < s.score)
        assert s.percentile == pytest.approx(100 * lower / 99)
    assert [s.id for s in scores if s.percentile >= 99] == [scores[0].id]
    assert platform.anomaly_scores("docs", k=5, top=3) == scores[:3]


def test_reference_must_use_the_same_model(platform: Platform, db_url: str) -> None:
    platform.create_collection("docs", model=HASH)
    platform.ingest("docs", _random_rows(20))
    hash_sync(db_url, "docs")
    platform.create_collection("other", model="test-hash-32")
    platform.ingest("other", _random_rows(20, seed=6))
    with pytest.raises(InvalidInputError, match="reference collection 'other' has no embeddings"):
        platform.anomaly_scores("docs", reference="other")
    hash_sync(db_url, "other", dimensions=32)
    with pytest.raises(
        ModelMismatchError, match=r"'docs' is embedded with test-hash-64.*'other' with test-hash-32"
    ):
        platform.anomaly_scores("docs", reference="other")
    with pytest.raises(CollectionNotFoundError, match="no reference collection named 'nope'"):
        platform.anomaly_scores("docs", reference="nope")
    # Nothing embedded yet: no scores (not an error).
    platform.create_collection("empty", model=HASH)
    platform.ingest("empty", _random_rows(3))
    assert platform.anomaly_scores("empty") == []


@pytest.mark.parametrize("k", [0, -1, 1001])
def test_k_out_of_range(platform: Platform, db_url: str, k: int) -> None:
    platform.create_collection("docs", model=HASH)
    with pytest.raises(InvalidInputError, match="k must be"):
        platform.anomaly_scores("docs", k=k)
    with (
        psycopg.connect(libpq_url(db_url)) as conn,
        pytest.raises(psycopg.errors.InvalidParameterValue, match="k must be between 1 and 1000"),
    ):
        conn.execute("SELECT * FROM embedplat.anomaly_scores('docs', %s)", (k,))


def test_probes_use_the_hnsw_index_of_the_probed_collection(
    platform: Platform, db_url: str
) -> None:
    platform.create_collection("docs", model=HASH)
    platform.ingest("docs", _random_rows(1000))
    hash_sync(db_url, "docs")
    platform.create_collection("ref", model=HASH)
    platform.ingest("ref", _random_rows(1000, seed=8))
    hash_sync(db_url, "ref")
    # One probe per chunk, each an index scan of the probed collection's index.
    plan = plans(db_url, "SELECT * FROM embedplat.anomaly_scores('docs', 10)")
    assert plan.count("Index Scan using ix_embeddings_ann_c1_m1") >= 1000, plan[:3000]
    plan = plans(db_url, "SELECT * FROM embedplat.anomaly_scores('docs', 10, 'ref')")
    assert plan.count("Index Scan using ix_embeddings_ann_c2_m1") >= 1000, plan[:3000]
    assert "ix_embeddings_ann_c1_m1" not in plan
    with psycopg.connect(libpq_url(db_url)) as conn:
        conn.execute("SELECT '[1]'::vector")
        conn.execute("SELECT * FROM embedplat.anomaly_scores('docs', 10, 'ref')").fetchall()
        knobs = conn.execute(
            "SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')"
        ).fetchone()
    assert knobs == ("40", "off")


HOSTILE = "x'); DROP TABLE embedplat.records; -- %s %I ; naïve 名前 🚀"


def test_hostile_names_are_harmless(platform: Platform, db_url: str) -> None:
    for name in (HOSTILE, HOSTILE + " ref"):
        platform.create_collection(name, model=HASH)
        platform.ingest(name, _random_rows(10))
        hash_sync(db_url, name)
    assert len(platform.anomaly_scores(HOSTILE, k=2)) == 10
    assert len(platform.anomaly_scores(HOSTILE, k=2, reference=HOSTILE + " ref")) == 10
    with pytest.raises(CollectionNotFoundError, match="no collection named"):
        platform.anomaly_scores("nope'; DROP TABLE embedplat.records; --")
    with pytest.raises(CollectionNotFoundError, match="no reference collection named"):
        platform.anomaly_scores(HOSTILE, reference="%s'%I\"")
    with psycopg.connect(libpq_url(db_url)) as conn:
        row = conn.execute("SELECT count(*) FROM embedplat.records").fetchone()
    assert row is not None and row[0] == 20


def test_cli_anomalies(platform: Platform, db_url: str, tmp_path) -> None:
    platform.create_collection("docs", model=HASH)
    platform.ingest("docs", _random_rows(30))
    hash_sync(db_url, "docs")
    env = _env(EMBEDPLAT_DATABASE_URL=db_url, EMBEDPLAT_HOME=str(tmp_path / "home"))
    lines = [
        json.loads(line)
        for line in run(
            ["anomalies", "docs", "-k", "4", "--top", "3", "--json"], env
        ).stdout.splitlines()
    ]
    expected = platform.anomaly_scores("docs", k=4, top=3)
    assert lines == [s.to_json() for s in expected]
    assert set(lines[0]) == {"id", "score", "rank", "percentile"}
    every = run(["anomalies", "docs", "--json"], env).stdout.splitlines()
    assert len(every) == 30
    bad = run(["anomalies", "docs", "--reference", "nope"], env, check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "error: embedplat.anomaly_scores: no reference collection named 'nope'"
    )
