"""embedplat.near_duplicates / duplicate_groups: exact results, threshold edges, groups and the
keeper rule, multi-chunk records, identical content without vectors, index use, hostile input."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import psycopg
import pytest

from embedplat.analytics import DEFAULT_DUPLICATE_THRESHOLD, DuplicatePair
from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.errors import CollectionNotFoundError, InvalidInputError
from tests.fix_cli import _env, run

from .analytics_helpers import (
    components,
    distinct_words,
    exact_pairs,
    stored_chunk_vectors,
)
from .real_corpus import TOPICS
from .search_helpers import hash_sync, plans

MODEL = "all-MiniLM-L6-v2"
HASH = "test-hash-64"


def _pairs(found: list[DuplicatePair]) -> dict[tuple[str, str], float]:
    assert all(p.a < p.b for p in found)
    assert len({(p.a, p.b) for p in found}) == len(found)
    return {(p.a, p.b): p.similarity for p in found}


# -- exact results with the real model ----------------------------------------------------------

PARAPHRASES = {
    "cat-1": "The cat sat on the mat all afternoon.",
    "cat-2": "All afternoon, the cat was sitting on the mat.",
    "profit-1": "The company reported record profits in the third quarter.",
    "profit-2": "The firm posted record third-quarter profits.",
    "flood-1": "Heavy rain caused flooding in the city centre on Monday.",
    "flood-2": "Flooding hit the city centre on Monday after heavy rain.",
    "budget-1": "Parliament passed the new budget after a long debate.",
    "budget-2": "Parliament passed the new budget after a long debate.",
}


@pytest.fixture
def real_set(platform: Platform) -> dict[str, str]:
    rows = dict(PARAPHRASES)
    for topic in ("gardening", "astronomy"):
        for n, text in enumerate(TOPICS[topic]):
            rows[f"{topic}-{n}"] = text
    platform.create_collection("news", model=MODEL)
    platform.ingest("news", [{"id": k, "text": v} for k, v in rows.items()])
    platform.sync("news")
    return rows


@pytest.mark.model
def test_pairs_match_exact_numpy_with_the_real_model(
    platform: Platform, real_set: dict[str, str]
) -> None:
    ids = sorted(real_set)
    vectors = platform.embedder(MODEL).embed([real_set[i] for i in ids])
    by_id = {i: [vectors[n].astype(np.float64)] for n, i in enumerate(ids)}
    for threshold in (DEFAULT_DUPLICATE_THRESHOLD, 0.5):
        want = exact_pairs(by_id, real_set, threshold)
        got = _pairs(platform.near_duplicates("news", threshold=threshold))
        # Pairs within rounding of the threshold may fall either way; none should exist here.
        borderline = {p for p, s in want.items() if abs(s - threshold) < 1e-4}
        assert not borderline
        assert set(got) == set(want), (threshold, got, want)
        for pair, sim in want.items():
            assert got[pair] == pytest.approx(sim, abs=1e-4)
    default = _pairs(platform.near_duplicates("news"))
    # The calibrated default keeps the paraphrases and the exact copy, and nothing else here.
    assert set(default) == {
        ("budget-1", "budget-2"),
        ("cat-1", "cat-2"),
        ("flood-1", "flood-2"),
        ("profit-1", "profit-2"),
    }
    assert default[("budget-1", "budget-2")] == 1.0
    # Sorted most similar first.
    sims = [p.similarity for p in platform.near_duplicates("news", threshold=0.5)]
    assert sims == sorted(sims, reverse=True)


@pytest.mark.model
def test_groups_match_connected_components_of_exact_pairs(
    platform: Platform, real_set: dict[str, str]
) -> None:
    ids = sorted(real_set)
    vectors = platform.embedder(MODEL).embed([real_set[i] for i in ids])
    by_id = {i: [vectors[n].astype(np.float64)] for n, i in enumerate(ids)}
    want = components(list(exact_pairs(by_id, real_set, 0.45)))
    members = platform.duplicate_groups("news", threshold=0.45)
    got: dict[int, set[str]] = {}
    for m in members:
        got.setdefault(m.group, set()).add(m.id)
    assert sorted(map(sorted, got.values())) == sorted(map(sorted, want))
    # Group ids: 1.. by size, largest first; one keeper per group, the smallest id on ties
    # (every record here was ingested in one transaction, so created_at ties).
    sizes = [len(got[g]) for g in sorted(got)]
    assert sorted(got) == list(range(1, len(got) + 1)) and sizes == sorted(sizes, reverse=True)
    for group, ids_ in got.items():
        keepers = [m.id for m in members if m.group == group and m.keeper]
        assert keepers == [min(ids_)]


# -- threshold edges (test embedder: exactly representable similarities) -------------------------


@pytest.fixture
def exact_set(platform: Platform, db_url: str) -> dict[str, str]:
    w = distinct_words(12)
    rows = {
        "p1a": f"{w[0]} {w[1]} {w[2]} {w[3]}",
        "p1b": f"{w[0]} {w[1]} {w[2]} {w[4]}",  # 3 of 4 words shared: cosine 0.75
        "p2a": f"{w[5]} {w[6]} {w[7]} {w[8]}",
        "p2b": f"{w[5]} {w[6]} {w[9]} {w[10]}",  # 2 of 4: cosine 0.5
        "same-1": f"{w[11]} {w[11]} {w[5]}",
        "same-2": f"{w[11]} {w[11]} {w[5]}",  # identical content
        "anagram": f"{w[3]} {w[2]} {w[1]} {w[0]}",  # same words as p1a: identical vector
    }
    platform.create_collection("edges", model=HASH)
    platform.ingest("edges", [{"id": k, "text": v} for k, v in rows.items()])
    hash_sync(db_url, "edges")
    return rows


def test_threshold_edges(platform: Platform, exact_set: dict[str, str]) -> None:
    at = _pairs(platform.near_duplicates("edges", threshold=0.75))
    assert at[("p1a", "p1b")] == 0.75  # exactly at the threshold: included
    assert at[("anagram", "p1b")] == 0.75
    assert ("p2a", "p2b") not in at
    just_above = float(np.nextafter(np.float32(0.75), np.float32(1)))
    above = _pairs(platform.near_duplicates("edges", threshold=just_above))
    assert ("p1a", "p1b") not in above and ("anagram", "p1b") not in above
    assert _pairs(platform.near_duplicates("edges", threshold=0.5))[("p2a", "p2b")] == 0.5
    # 1.0: identical content (found by hash) and identical vectors, nothing else.
    assert _pairs(platform.near_duplicates("edges", threshold=1.0)) == {
        ("anagram", "p1a"): 1.0,
        ("same-1", "same-2"): 1.0,
    }
    # Every similarity below 0: everything is a pair of these 7 records' probes' neighbours.
    assert len(platform.near_duplicates("edges", threshold=-1.0, k=10)) == 21


def test_above_every_pair_only_identical_content_remains(platform: Platform, db_url: str) -> None:
    w = distinct_words(6)
    platform.create_collection("edges", model=HASH)
    platform.ingest(
        "edges",
        [
            {"id": "a", "text": f"{w[0]} {w[1]}"},
            {"id": "b", "text": f"{w[0]} {w[2]}"},
            {"id": "c", "text": f"{w[3]} {w[4]} {w[5]}"},
        ],
    )
    hash_sync(db_url, "edges")
    assert platform.near_duplicates("edges", threshold=0.51) == []
    assert platform.duplicate_groups("edges", threshold=0.51) == []
    assert [(p.a, p.b) for p in platform.near_duplicates("edges", threshold=0.5)] == [("a", "b")]


@pytest.mark.parametrize("threshold", [1.01, -1.5, float("nan")])
def test_threshold_out_of_range_is_refused(platform: Platform, exact_set, threshold) -> None:
    with pytest.raises(InvalidInputError, match="threshold"):
        platform.near_duplicates("edges", threshold=threshold)


@pytest.mark.parametrize("k", [0, 1001])
def test_k_out_of_range_is_refused_by_sql(db_url: str, exact_set, k: int) -> None:
    with (
        psycopg.connect(libpq_url(db_url)) as conn,
        pytest.raises(psycopg.errors.InvalidParameterValue, match="k must be between 1 and 1000"),
    ):
        conn.execute("SELECT * FROM embedplat.near_duplicates('edges', 0.5, %s)", (k,))
    with (
        psycopg.connect(libpq_url(db_url)) as conn,
        pytest.raises(psycopg.errors.InvalidParameterValue, match="threshold must be"),
    ):
        conn.execute("SELECT * FROM embedplat.near_duplicates('edges', 'NaN'::real)")


# -- identical content, copies, multi-chunk records ----------------------------------------------


def test_identical_content_is_found_without_vectors(platform: Platform) -> None:
    platform.create_collection("raw", model=HASH)
    platform.ingest(
        "raw",
        [
            {"id": "x1", "text": "same text"},
            {"id": "x2", "text": "same text"},
            {"id": "x3", "text": "same text"},
            {"id": "y", "text": "other text"},
        ],
    )  # never synced: no vectors at all
    assert _pairs(platform.near_duplicates("raw")) == {
        ("x1", "x2"): 1.0,
        ("x1", "x3"): 1.0,
        ("x2", "x3"): 1.0,
    }
    members = platform.duplicate_groups("raw")
    assert [(m.group, m.id, m.keeper) for m in members] == [
        (1, "x1", True),
        (1, "x2", False),
        (1, "x3", False),
    ]


def test_many_copies_do_not_crowd_out_a_near_duplicate(platform: Platform, db_url: str) -> None:
    w = distinct_words(5)
    platform.create_collection("copies", model=HASH)
    rows = [{"id": f"copy-{i:02d}", "text": f"{w[0]} {w[1]} {w[2]} {w[3]}"} for i in range(15)]
    rows.append({"id": "near", "text": f"{w[0]} {w[1]} {w[2]} {w[4]}"})
    platform.ingest("copies", rows)
    hash_sync(db_url, "copies")
    got = _pairs(platform.near_duplicates("copies", threshold=0.7, k=3))
    # Probes run once per distinct content, so 15 identical copies cannot fill the 3 nearest
    # neighbours of "near" and hide each other: every copy pairs with it.
    assert {p for p, s in got.items() if "near" in p} == {
        (f"copy-{i:02d}", "near") for i in range(15)
    }
    assert all(s == 0.75 for p, s in got.items() if "near" in p)
    assert len(got) == 15 + 15 * 14 // 2


def test_copies_on_both_sides_do_not_hide_the_pair(platform: Platform, db_url: str) -> None:
    # 12 copies of X and 12 of Y, X~Y at exactly 0.75, k=10: each content's probe must look
    # past its own 11 other copies (all at similarity 1) to find the other content.
    w = distinct_words(5)
    platform.create_collection("crowds", model=HASH)
    rows = [{"id": f"x{i:02d}", "text": f"{w[0]} {w[1]} {w[2]} {w[3]}"} for i in range(12)]
    rows += [{"id": f"y{i:02d}", "text": f"{w[0]} {w[1]} {w[2]} {w[4]}"} for i in range(12)]
    platform.ingest("crowds", rows)
    hash_sync(db_url, "crowds")
    got = _pairs(platform.near_duplicates("crowds", threshold=0.7, k=10))
    cross = {p: s for p, s in got.items() if p[0][0] != p[1][0]}
    assert set(cross) == {(f"x{i:02d}", f"y{j:02d}") for i in range(12) for j in range(12)}
    assert all(s == 0.75 for s in cross.values())
    assert len(got) == 144 + 2 * (12 * 11 // 2)


def test_multi_chunk_record_similarity(platform: Platform, db_url: str) -> None:
    w = distinct_words(40)

    def para(*idx: int) -> str:
        return " ".join(w[i] for i in idx)

    shared = [para(0, 1, 2, 3, 4), para(5, 6, 7, 8, 9), para(10, 11, 12, 13, 14)]
    rows = {
        "doc-a": "\n\n".join([*shared, para(15, 16, 17, 18, 19)]),
        # Same first three paragraphs, the fourth one different: a near-duplicate.
        "doc-b": "\n\n".join([*shared, para(20, 21, 22, 23, 24)]),
        # Only a boilerplate paragraph in common with doc-a: not a duplicate.
        "doc-c": "\n\n".join(
            [
                para(25, 26, 27, 28, 29),
                para(30, 31, 32, 33, 34),
                shared[0],
                para(35, 36, 37, 38, 39),
            ]
        ),
        # doc-a's first paragraph alone: contained in doc-a, not its duplicate.
        "short": shared[0],
    }
    platform.create_collection("long", model=HASH, chunk_tokens=8, chunk_overlap=0)
    platform.ingest("long", [{"id": k, "text": v} for k, v in rows.items()])
    hash_sync(db_url, "long")
    vectors = stored_chunk_vectors(db_url, "long")
    assert [len(vectors[k]) for k in ("doc-a", "doc-b", "doc-c", "short")] == [4, 4, 4, 1]
    for threshold in (0.7, 0.2):
        want = exact_pairs(vectors, rows, threshold)
        got = _pairs(platform.near_duplicates("long", threshold=threshold))
        assert set(got) == set(want), threshold
        for pair, sim in want.items():
            assert got[pair] == pytest.approx(sim, abs=1e-6)
    at_default = _pairs(platform.near_duplicates("long"))
    assert set(at_default) == {("doc-a", "doc-b")}
    assert at_default[("doc-a", "doc-b")] == pytest.approx(0.75, abs=1e-6)


# -- groups and the keeper rule --------------------------------------------------------------------


def test_groups_are_connected_components_and_the_oldest_record_is_kept(
    platform: Platform, db_url: str
) -> None:
    w = distinct_words(16)
    platform.create_collection("g", model=HASH)
    # A chain: x ~ y (0.75) and y ~ z (0.75), but x !~ z (0.5) at threshold 0.7.
    # A pair p ~ q, and a record alike to none.
    platform.ingest(
        "g",
        [
            {"id": "x", "text": f"{w[0]} {w[1]} {w[2]} {w[3]}"},
            {"id": "y", "text": f"{w[0]} {w[1]} {w[2]} {w[5]}"},
            {"id": "z", "text": f"{w[0]} {w[1]} {w[4]} {w[5]}"},
            {"id": "q", "text": f"{w[8]} {w[9]} {w[10]} {w[11]}"},
            {"id": "p", "text": f"{w[8]} {w[9]} {w[10]} {w[12]}"},
            {"id": "alone", "text": f"{w[13]} {w[14]} {w[15]}"},
        ],
    )
    # Ages set explicitly (one ingest gives them all one timestamp): z is the oldest of its
    # group although its id sorts last; x and y tie, and so do p and q (the smaller id is kept).
    with psycopg.connect(libpq_url(db_url)) as conn:
        conn.execute(
            "UPDATE embedplat.records r SET created_at = v.at::timestamptz "
            "FROM (VALUES ('z', '2001-01-01'), ('x', '2001-01-02'), ('y', '2001-01-02'), "
            "('p', '2001-01-03'), ('q', '2001-01-03'), ('alone', '2001-01-03')) AS v(id, at) "
            "WHERE r.external_id = v.id"
        )
    hash_sync(db_url, "g")
    pairs = _pairs(platform.near_duplicates("g"))
    assert set(pairs) == {("x", "y"), ("y", "z"), ("p", "q")}
    members = [(m.group, m.id, m.keeper) for m in platform.duplicate_groups("g")]
    # Largest group first; the keeper first in its group; "z" is the oldest of x, y, z.
    assert members == [
        (1, "z", True),
        (1, "x", False),
        (1, "y", False),
        (2, "p", True),
        (2, "q", False),
    ]


# -- the index, settings, hostile input, CLI -----------------------------------------------------


def test_probes_use_the_hnsw_index(platform: Platform, db_url: str) -> None:
    words = distinct_words(30)
    rng = np.random.default_rng(3)
    platform.create_collection("big", model=HASH)
    platform.ingest(
        "big", [{"id": f"r{i:04d}", "text": " ".join(rng.choice(words, 8))} for i in range(1000)]
    )
    hash_sync(db_url, "big")
    for statement in (
        "SELECT * FROM embedplat.near_duplicates('big', 0.9)",
        "SELECT * FROM embedplat.duplicate_groups('big', 0.9)",
    ):
        plan = plans(db_url, statement)
        # One probe per chunk, each an index scan ordered by the index's own expression.
        assert plan.count("Index Scan using ix_embeddings_ann_c1_m1") >= 990, plan[:3000]
        assert "Order By: ((embedding)::vector(64) <=> '[" in plan, plan[:3000]


def test_index_knobs_do_not_leak(db_url: str, exact_set) -> None:
    with psycopg.connect(libpq_url(db_url)) as conn:
        conn.execute("SELECT '[1]'::vector")  # load pgvector so its settings exist
        before = conn.execute(
            "SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')"
        ).fetchone()
        conn.execute("SELECT * FROM embedplat.near_duplicates('edges', 0.5)").fetchall()
        conn.execute("SELECT * FROM embedplat.duplicate_groups('edges', 0.5)").fetchall()
        after = conn.execute(
            "SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')"
        ).fetchone()
    assert before == after == ("40", "off")


HOSTILE = 'x\'); DROP TABLE embedplat.records; -- %s %I "q" ; naïve 名前 🚀'


def test_hostile_collection_names_are_harmless(platform: Platform, db_url: str) -> None:
    w = distinct_words(5)
    platform.create_collection(HOSTILE, model=HASH)
    platform.ingest(
        HOSTILE,
        [
            {"id": "a'; --", "text": f"{w[0]} {w[1]} {w[2]} {w[3]}"},
            {"id": "b %s", "text": f"{w[0]} {w[1]} {w[2]} {w[4]}"},
        ],
    )
    hash_sync(db_url, HOSTILE)
    assert _pairs(platform.near_duplicates(HOSTILE)) == {("a'; --", "b %s"): 0.75}
    assert [m.id for m in platform.duplicate_groups(HOSTILE)] == ["a'; --", "b %s"]
    for name in ("nope'; DROP TABLE embedplat.records; --", "%s%s", "名前"):
        with pytest.raises(CollectionNotFoundError, match="no collection named"):
            platform.near_duplicates(name)
        with pytest.raises(CollectionNotFoundError, match="no collection named"):
            platform.duplicate_groups(name)
    with psycopg.connect(libpq_url(db_url)) as conn:
        row = conn.execute("SELECT count(*) FROM embedplat.records").fetchone()
    assert row is not None and row[0] == 2


def test_cli_duplicates_json_lines(db_url: str, exact_set, tmp_path) -> None:
    env = _env(EMBEDPLAT_DATABASE_URL=db_url, EMBEDPLAT_HOME=str(tmp_path / "home"))
    out = run(["duplicates", "edges", "--threshold", "0.75", "--json"], env).stdout
    lines: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"a": "anagram", "b": "p1a", "similarity": 1.0}
    assert {"a": "p1a", "b": "p1b", "similarity": 0.75} in lines
    assert all(set(line) == {"a", "b", "similarity"} for line in lines)
    out = run(["duplicates", "edges", "--threshold", "0.75", "--groups", "--json"], env).stdout
    groups = [json.loads(line) for line in out.splitlines()]
    assert groups[0] == {"group_id": 1, "group": 1, "id": "anagram", "keeper": True}
    assert {g["id"] for g in groups if g["group"] == 1} == {"anagram", "p1a", "p1b"}
    bad = run(["duplicates", "edges", "--threshold", "2"], env, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: threshold must be")
    missing = run(["duplicates", "nope"], env, check=False)
    assert missing.returncode == 1 and "no collection named 'nope'" in missing.stderr
