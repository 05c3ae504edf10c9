"""Export a collection (records or chunks, optionally with vectors) as JSON Lines or Parquet.

Rows stream from a server-side cursor in batches, so exporting a large collection needs
memory for one batch only. Files are written next to the target and renamed into place at
the end: an interrupted export never leaves a truncated file under the requested name.

Row shapes (JSON Lines; Parquet has the same columns, ``metadata`` as a JSON string):

* records: ``{"id", "text", "metadata", "content_hash", "created_at", "updated_at"}`` plus,
  with vectors, ``"vectors"``: the record's chunk vectors (active model) in chunk order;
* chunks (``chunks=True``): ``{"id", "chunk", "text", "char_start", "char_end", "tokens",
  "metadata"}`` (``id`` is the record's external id, ``chunk`` the chunk's ordinal) plus,
  with vectors, ``"vector"`` (null while the chunk is not embedded yet).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, Any, Literal

import psycopg

from embedplat.collections import get_collection
from embedplat.errors import ConfigurationError, InvalidInputError

Connection = psycopg.Connection[Any]
ExportFormat = Literal["jsonl", "parquet"]
Progress = Callable[[int], None]

DEFAULT_BATCH = 2000

_RECORDS = """
SELECT r.external_id, r.content, r.metadata, encode(r.content_hash, 'hex'),
       r.created_at, r.updated_at{vectors}
FROM embedplat.records r
WHERE r.collection_id = %(collection_id)s
ORDER BY r.id
"""
_RECORD_VECTORS = """,
       (SELECT array_agg(e.embedding::real[] ORDER BY ch.ordinal)
        FROM embedplat.chunks ch
        JOIN embedplat.embeddings e ON e.chunk_id = ch.id AND e.model_id = %(model_id)s
        WHERE ch.record_id = r.id)"""

_CHUNKS = """
SELECT r.external_id, ch.ordinal, ch.content, ch.char_start, ch.char_end, ch.token_count,
       r.metadata{vectors}
FROM embedplat.chunks ch
JOIN embedplat.records r ON r.id = ch.record_id{join}
WHERE ch.collection_id = %(collection_id)s
ORDER BY ch.record_id, ch.ordinal
"""
_CHUNK_VECTOR = ",\n       e.embedding::real[]"
_CHUNK_JOIN = (
    "\nLEFT JOIN embedplat.embeddings e ON e.chunk_id = ch.id AND e.model_id = %(model_id)s"
)

RECORD_FIELDS = ("id", "text", "metadata", "content_hash", "created_at", "updated_at")
CHUNK_FIELDS = ("id", "chunk", "text", "char_start", "char_end", "tokens", "metadata")


def count_rows(conn: Connection, collection: str, *, chunks: bool = False) -> int:
    """How many rows an export of ``collection`` writes."""
    info = get_collection(conn, collection)
    table = "embedplat.chunks" if chunks else "embedplat.records"
    row = conn.execute(
        f"SELECT count(*) FROM {table} WHERE collection_id = %s", (info.id,)
    ).fetchone()
    return int(row[0]) if row else 0


def export_rows(
    conn: Connection,
    collection: str,
    *,
    chunks: bool = False,
    vectors: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[dict[str, Any]]:
    """The export's rows as dicts, streamed from a server-side cursor.

    ``conn`` must not be in autocommit mode (a server-side cursor lives in a transaction).
    """
    info = get_collection(conn, collection)
    params = {"collection_id": info.id, "model_id": info.active_model_id}
    with_vectors = vectors and info.active_model_id is not None
    if chunks:
        query = _CHUNKS.format(
            vectors=_CHUNK_VECTOR if with_vectors else "",
            join=_CHUNK_JOIN if with_vectors else "",
        )
        fields: tuple[str, ...] = CHUNK_FIELDS + (("vector",) if vectors else ())
    else:
        query = _RECORDS.format(vectors=_RECORD_VECTORS if with_vectors else "")
        fields = RECORD_FIELDS + (("vectors",) if vectors else ())
    with conn.cursor(name="embedplat_export") as cursor:
        cursor.itersize = batch_size
        cursor.execute(query, params)
        for row in cursor:
            values = list(row)
            if vectors and not with_vectors:
                values.append(None)  # nothing embedded yet
            yield dict(zip(fields, values, strict=True))


def write_jsonl(
    rows: Iterator[dict[str, Any]], out: IO[str], progress: Progress | None = None
) -> int:
    """Write rows as JSON Lines; returns the number of rows."""
    n = 0
    pending = 0
    for row in rows:
        for key in ("created_at", "updated_at"):
            if key in row:
                row[key] = row[key].isoformat()
        out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        n += 1
        pending += 1
        if progress is not None and pending >= 500:
            progress(pending)
            pending = 0
    if progress is not None and pending:
        progress(pending)
    return n


def _parquet_schema(chunks: bool, vectors: bool) -> Any:
    import pyarrow as pa

    if chunks:
        fields = [
            pa.field("id", pa.string(), nullable=False),
            pa.field("chunk", pa.int32(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("char_start", pa.int32(), nullable=False),
            pa.field("char_end", pa.int32(), nullable=False),
            pa.field("tokens", pa.int32(), nullable=False),
            pa.field("metadata", pa.string(), nullable=False),
        ]
        if vectors:
            fields.append(pa.field("vector", pa.list_(pa.float32())))
    else:
        fields = [
            pa.field("id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("metadata", pa.string(), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
        if vectors:
            fields.append(pa.field("vectors", pa.list_(pa.list_(pa.float32()))))
    return pa.schema(fields)


def write_parquet(
    rows: Iterator[dict[str, Any]],
    path: Path,
    *,
    chunks: bool,
    vectors: bool,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> int:
    """Write rows to a Parquet file at ``path`` (atomically); returns the number of rows."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigurationError(
            "Parquet export needs pyarrow: pip install 'embedplat[export]'"
        ) from None
    schema = _parquet_schema(chunks, vectors)
    names = schema.names
    n = 0

    def flush(writer: Any, batch: list[dict[str, Any]]) -> None:
        columns = {name: [row[name] for row in batch] for name in names}
        columns["metadata"] = [json.dumps(m, ensure_ascii=False) for m in columns["metadata"]]
        writer.write_batch(pa.RecordBatch.from_pydict(columns, schema=schema))
        if progress is not None:
            progress(len(batch))

    with _atomic_path(path) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            n += 1
            if len(batch) >= batch_size:
                flush(writer, batch)
                batch = []
        if batch or n == 0:
            flush(writer, batch)
    return n


class _atomic_path:
    """A temporary path next to ``path`` that is renamed to ``path`` on success."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> Path:
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if not folder.is_dir():
            raise InvalidInputError(f"cannot write {self.path}: folder {folder} does not exist")
        if self.path.is_dir():
            raise InvalidInputError(
                f"cannot write {self.path}: it is a folder; name a file (e.g. {self.path}/out.jsonl)"
            )
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=folder)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            with suppress(OSError):
                self.tmp.unlink()


def export_collection(
    conn: Connection,
    collection: str,
    output: Path | IO[str],
    *,
    chunks: bool = False,
    vectors: bool = False,
    format: ExportFormat = "jsonl",
    progress: Progress | None = None,
) -> int:
    """Export ``collection`` to ``output`` (a path, or a text stream for JSON Lines).

    Returns the number of rows written.
    """
    if format not in ("jsonl", "parquet"):
        raise InvalidInputError(f"format must be 'jsonl' or 'parquet', got {format!r}")
    rows = export_rows(conn, collection, chunks=chunks, vectors=vectors)
    if format == "parquet":
        if not isinstance(output, str | os.PathLike):
            raise InvalidInputError("Parquet export needs an output file (--output PATH)")
        return write_parquet(rows, Path(output), chunks=chunks, vectors=vectors, progress=progress)
    if isinstance(output, str | os.PathLike):
        with _atomic_path(Path(output)) as tmp, tmp.open("w", encoding="utf-8") as fh:
            return write_jsonl(rows, fh, progress)
    return write_jsonl(rows, output, progress)
