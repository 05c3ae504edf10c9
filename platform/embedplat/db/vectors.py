"""Vectors on the wire: pgvector text literals, and binary COPY streams for bulk writes.

A single vector (a search's query) goes as ``'[0.1,0.2,...]'`` with an explicit ``::vector``
cast: no per-connection type registration, works on pooled and fresh connections alike.

Many vectors (a sync's batch) go as one ``COPY ... (FORMAT BINARY)`` stream built by numpy in
one pass (:func:`copy_rows`): about a hundred times cheaper to make than the text literals
(whose float formatting cost ~0.15 ms per 384-dimensional vector, and as much again for the
server to parse), and it still needs no type registration: the stream carries pgvector's
binary format, which the server's ``vector_recv`` reads (and checks, as it checks text).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["COPY_SIGNATURE", "COPY_TRAILER", "copy_rows", "vector_literal"]

#: The binary COPY header (signature, flags, header extension length) and end marker.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
COPY_TRAILER = b"\xff\xff"


def vector_literal(vector: Sequence[float] | np.ndarray) -> str:
    """``[x1,x2,...]`` with float32 precision (what pgvector stores)."""
    array = np.asarray(vector, dtype=np.float32)
    return "[" + ",".join(map(repr, array.tolist())) + "]"


def copy_rows(ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> bytes:
    """A whole ``COPY table (bigint_column, vector_column) FROM STDIN (FORMAT BINARY)`` stream:
    one row per id with its vector (row ``i`` of ``vectors``, converted to float32).

    Each row is a field count, then per field its byte length and value, big-endian: the id as
    int8, the vector as pgvector's binary form (int16 dimensions, int16 zero, the float4s).
    """
    values = np.asarray(vectors, dtype=np.float32)
    if values.ndim != 2 or len(values) != len(ids):
        raise ValueError(f"need one vector per id, got shape {values.shape} for {len(ids)} ids")
    dims = values.shape[1]
    if not 0 < dims < 2**15:
        raise ValueError(f"cannot write vectors of {dims} dimensions")
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("id_bytes", ">i4"),
            ("id", ">i8"),
            ("vector_bytes", ">i4"),
            ("dims", ">i2"),
            ("unused", ">i2"),
            ("values", ">f4", (dims,)),
        ]
    )
    rows = np.empty(len(values), dtype=row)
    rows["fields"] = 2
    rows["id_bytes"] = 8
    rows["id"] = np.asarray(ids, dtype=np.int64)
    rows["vector_bytes"] = 4 + 4 * dims
    rows["dims"] = dims
    rows["unused"] = 0
    rows["values"] = values
    return COPY_SIGNATURE + rows.tobytes() + COPY_TRAILER
