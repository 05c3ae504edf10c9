"""The binary COPY stream of (id, vector) rows (embedplat.db.vectors.copy_rows), byte by byte."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from embedplat.db.vectors import COPY_SIGNATURE, COPY_TRAILER, copy_rows


def test_stream_is_signature_rows_trailer_in_postgres_binary_copy_layout() -> None:
    vectors = np.array([[0.5, -1.25, 3.0], [1e-3, 0.0, -2.0]], dtype=np.float64)
    stream = copy_rows([7, 2**40], vectors)
    assert stream.startswith(COPY_SIGNATURE) and stream.endswith(COPY_TRAILER)
    body = stream[len(COPY_SIGNATURE) : -len(COPY_TRAILER)]
    row_bytes = 2 + (4 + 8) + (4 + 2 + 2 + 4 * 3)
    assert len(body) == 2 * row_bytes
    for i, (ident, vector) in enumerate(zip([7, 2**40], vectors, strict=True)):
        row = body[i * row_bytes : (i + 1) * row_bytes]
        fields, id_len, got_id, vec_len, dims, unused = struct.unpack(">hiqihh", row[:22])
        assert (fields, id_len, got_id, vec_len, dims, unused) == (2, 8, ident, 16, 3, 0)
        got = struct.unpack(">3f", row[22:])
        assert got == tuple(np.float32(v) for v in vector)


def test_empty_batch_is_a_valid_empty_stream() -> None:
    assert copy_rows([], np.zeros((0, 4), dtype=np.float32)) == COPY_SIGNATURE + COPY_TRAILER


@pytest.mark.parametrize(
    ("ids", "shape"),
    [([1, 2], (3, 4)), ([1], (4,)), ([1], (1, 0)), ([1], (1, 2**15))],
)
def test_mismatched_or_impossible_shapes_are_refused(
    ids: list[int], shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError):
        copy_rows(ids, np.zeros(shape, dtype=np.float32))
