"""Option and argument types shared by several commands (one declaration each)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

__all__ = [
    "BackendChoice",
    "BackendOption",
    "CollectionArg",
    "EfSearchOption",
    "ExportFormatChoice",
    "FilterOption",
    "IndexMethod",
    "InputFormat",
    "JsonFlag",
    "OnErrorChoice",
    "ProbesOption",
    "storable_text",
]


def storable_text(value: str | None) -> str | None:
    """Refuse an argument PostgreSQL could not even look up: a NUL, or bytes that are not
    UTF-8 (Python keeps them as lone surrogates); a usage error (exit status 2)."""
    from embedplat.ingest import unstorable_characters

    bad = unstorable_characters(value) if value is not None else None
    if bad:
        raise typer.BadParameter(f"contains {bad}; give valid UTF-8 text")
    return value


CollectionArg = Annotated[
    str, typer.Argument(metavar="COLLECTION", help="Collection name.", callback=storable_text)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
FilterOption = Annotated[
    str | None,
    typer.Option(
        "--filter",
        help='Metadata filter (docs/filters.md), e.g. \'{"topic": "sport", "year": {"$gte": 2020}}\'.',
    ),
]
EfSearchOption = Annotated[
    int | None, typer.Option(help="HNSW ef_search for this query (recall vs speed).")
]
ProbesOption = Annotated[int | None, typer.Option(help="IVFFlat probes for this query.")]


class InputFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    text = "text"


class OnErrorChoice(StrEnum):
    fail = "fail"
    skip = "skip"


class IndexMethod(StrEnum):
    hnsw = "hnsw"
    ivfflat = "ivfflat"


class ExportFormatChoice(StrEnum):
    jsonl = "jsonl"
    parquet = "parquet"


class BackendChoice(StrEnum):
    """embedplat.embedders.backends.BACKENDS, for typer's choices (a test keeps them equal)."""

    torch = "torch"
    onnx = "onnx"
    onnx_int8 = "onnx-int8"
    openvino = "openvino"
    openvino_int8 = "openvino-int8"


BackendOption = Annotated[
    BackendChoice | None,
    typer.Option(
        "--backend",
        help="Runtime of the model: torch, onnx, onnx-int8, openvino or openvino-int8; the "
        "model becomes MODEL@BACKEND, a model of its own (docs/models.md). Default for a new "
        "collection: EMBEDPLAT_BACKEND, else the model's measured default (openvino-int8 for "
        "all-MiniLM-L6-v2, torch for models not measured).",
        show_default=False,
    ),
]
