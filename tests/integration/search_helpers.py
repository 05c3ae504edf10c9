"""Helpers shared by the integration tests that use the deterministic test embedder: word
corpora, a test-hash-N sync, a collection set up with them, and query plans (auto_explain)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import psycopg

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.sync import SyncOptions, SyncReport, sync
from tests.fix_embedders import HashEmbedder

WORDS = [
    "apple",
    "banana",
    "cherry",
    "delta",
    "echo",
    "forest",
    "granite",
    "harbor",
    "island",
    "jungle",
    "kettle",
    "lemon",
]


def word_rows(
    n: int,
    *,
    seed: int,
    metadata: Callable[[int, np.random.Generator], dict[str, Any]],
    id_digits: int = 5,
) -> list[dict[str, Any]]:
    """``n`` records ``r00000``… of 8 random :data:`WORDS` each (reproducible by ``seed``).

    ``metadata(i, rng)`` makes record ``i``'s metadata; it is called before the record's words
    are drawn from the same generator.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        meta = metadata(i, rng)
        rows.append(
            {"id": f"r{i:0{id_digits}d}", "text": " ".join(rng.choice(WORDS, 8)), "metadata": meta}
        )
    return rows


def hash_sync(url: str, collection: str = "docs", dimensions: int = 64) -> SyncReport:
    """Sync ``collection`` with the deterministic test embedder (test-hash-N)."""
    return sync(
        lambda: psycopg.connect(libpq_url(url)),
        lambda name: HashEmbedder(dimensions),
        collection,
        SyncOptions(),
    )


def hash_collection(platform: Platform, url: str, rows: list[dict[str, Any]]) -> None:
    """Collection ``docs`` (model test-hash-64) with ``rows`` ingested and synced."""
    platform.create_collection("docs", model="test-hash-64")
    platform.ingest("docs", rows)
    hash_sync(url)


def plans(
    url: str,
    statement: str,
    params: tuple[Any, ...] = (),
    *,
    settings: Mapping[str, str] | None = None,
) -> str:
    """The plans of every statement ``statement`` runs, nested ones included (auto_explain).

    ``settings``: more ``SET name = value`` to run first (names and values are trusted SQL).
    """
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_nested_statements = on")
        conn.execute("SET auto_explain.log_level = notice")
        conn.execute("SET client_min_messages = notice")
        for name, value in (settings or {}).items():
            conn.execute(f"SET {name} = {value}")
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute(statement, params).fetchall()
    return "\n".join(notices)
