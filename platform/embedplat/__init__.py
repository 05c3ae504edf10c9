"""embedplat: keep embeddings inside PostgreSQL.

The public API is re-exported here; heavy modules load on first use so that
``import embedplat`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CollectionInfo",
    "CollectionStatus",
    "EmbedplatError",
    "IngestResult",
    "Platform",
    "SearchHit",
    "Settings",
    "SyncOptions",
    "SyncReport",
]

_LOCATIONS = {
    "Platform": "embedplat.api",
    "CollectionInfo": "embedplat.collections",
    "CollectionStatus": "embedplat.status",
    "EmbedplatError": "embedplat.errors",
    "IngestResult": "embedplat.store",
    "SearchHit": "embedplat.search",
    "Settings": "embedplat.config",
    "SyncOptions": "embedplat.sync",
    "SyncReport": "embedplat.sync",
}

if TYPE_CHECKING:
    from embedplat.api import Platform
    from embedplat.collections import CollectionInfo
    from embedplat.config import Settings
    from embedplat.errors import EmbedplatError
    from embedplat.search import SearchHit
    from embedplat.status import CollectionStatus
    from embedplat.store import IngestResult
    from embedplat.sync import SyncOptions, SyncReport


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'embedplat' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
