"""`embedplat search` and `embedplat similar`: nearest records to a text or to a record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from embedplat.cli.app import app, handle_errors, open_platform, usage_error
from embedplat.cli.options import (
    CollectionArg,
    EfSearchOption,
    FilterOption,
    JsonFlag,
    ProbesOption,
    storable_text,
)
from embedplat.cli.output import print_hits, print_json, shown
from embedplat.errors import InvalidInputError
from embedplat.ingest import unstorable_characters
from embedplat.search import DEFAULT_K, MAX_K, SearchOptions


@app.command()
@handle_errors()
def search(
    collection: CollectionArg,
    query: Annotated[
        list[str] | None,
        typer.Argument(metavar="QUERY", help="Query text (words are joined)."),
    ] = None,
    queries: Annotated[
        Path | None,
        typer.Option("--queries", help='JSON Lines file of {"text", "id"?} queries.'),
    ] = None,
    k: Annotated[int, typer.Option("-k", help=f"Records per query (1 to {MAX_K}).")] = DEFAULT_K,
    filter_json: FilterOption = None,
    hybrid: Annotated[
        bool,
        typer.Option("--hybrid", help="Fuse full-text and vector search (reciprocal rank fusion)."),
    ] = False,
    min_similarity: Annotated[
        float | None, typer.Option(help="Leave out hits below this cosine similarity.")
    ] = None,
    per_chunk: Annotated[
        bool, typer.Option("--per-chunk", help="One row per chunk instead of per record.")
    ] = False,
    ef_search: EfSearchOption = None,
    probes: ProbesOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Find the records nearest to a query text (or to each query of a file).

    A blank query, or one with a NUL character or text that is not valid UTF-8, is refused.
    """
    batch = load_queries(query, queries)
    filter_value = parse_filter(filter_json)
    # The library's one check of k (1 to MAX_K) and the other options, before a model loads.
    SearchOptions(k=k, ef_search=ef_search, probes=probes)
    if hybrid and (min_similarity is not None or per_chunk):
        raise InvalidInputError(
            "--min-similarity and --per-chunk apply to vector search, not --hybrid"
        )
    with open_platform() as platform:
        results = platform.search_many(
            collection,
            [text for _, text in batch],
            k=k,
            filter=filter_value,
            hybrid=hybrid,
            min_similarity=min_similarity,
            per_record=not per_chunk,
            ef_search=ef_search,
            probes=probes,
        )
    for (query_id, text), hits in zip(batch, results, strict=True):
        if json_out:
            print_json({"query_id": query_id, "query": text, "hits": [h.to_json() for h in hits]})
            continue
        typer.echo(f"# {shown(text)}")
        print_hits(hits, indent="  ")


@app.command()
@handle_errors()
def similar(
    collection: CollectionArg,
    record_id: Annotated[
        str,
        typer.Argument(metavar="ID", help="External id of the record.", callback=storable_text),
    ],
    k: Annotated[int, typer.Option("-k", help=f"Records to return (1 to {MAX_K}).")] = DEFAULT_K,
    filter_json: FilterOption = None,
    ef_search: EfSearchOption = None,
    probes: ProbesOption = None,
    json_out: JsonFlag = False,
) -> None:
    """More like this: the records nearest to record ID (by the mean of its chunk vectors)."""
    filter_value = parse_filter(filter_json)
    with open_platform() as platform:
        hits = platform.similar(
            collection, record_id, k=k, filter=filter_value, ef_search=ef_search, probes=probes
        )
    if json_out:
        for hit in hits:
            print_json(hit.to_json())
        return
    print_hits(hits)


def parse_filter(text: str | None) -> dict[str, Any] | None:
    """--filter's JSON, checked against the filter language (docs/filters.md)."""
    if not text:
        return None
    from embedplat.filters import parse_filter as parse

    return parse(text)


def load_queries(words: list[str] | None, path: Path | None) -> list[tuple[Any, str]]:
    """(id, text) of the query words, or of each line of a ``--queries`` JSON Lines file."""
    if words and path:
        raise InvalidInputError("give a query text or --queries FILE, not both")
    if words:
        # The command line's own mistakes: usage errors (exit status 2), as for a missing one.
        text = " ".join(words)
        if not text.strip():
            raise usage_error("the query is blank; give the words to search for")
        bad = unstorable_characters(text)
        if bad:
            # From the command line, a surrogate means bytes that are not UTF-8 (Python keeps
            # them as lone surrogates); PostgreSQL could neither store nor search them.
            raise usage_error(f"the query contains {bad}; give valid UTF-8 text")
        return [(0, text)]
    if path is None:
        raise InvalidInputError("give a query text or --queries FILE.jsonl")
    batch: list[tuple[Any, str]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise InvalidInputError(f"{path}:{number}: not valid JSON ({exc})") from None
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("text"), str)
            or not obj["text"].strip()
        ):
            raise InvalidInputError(f'{path}:{number}: expected an object with a "text" string')
        bad = unstorable_characters(obj["text"])
        if bad:
            raise InvalidInputError(
                f"{path}:{number}: the query text contains {bad}, which PostgreSQL cannot search"
            )
        batch.append((obj.get("id", len(batch)), obj["text"]))
    if not batch:
        raise InvalidInputError(f"{path}: no queries")
    return batch
