"""Chunk boundaries of fixed inputs stay exactly as they were.

Chunk texts are a stored format: a changed boundary changes a chunk's hash, and so re-embeds
it. ``chunking_pinned.json`` holds inputs (documents, markdown, CRLF and U+2029 separators,
over-long sentences, repeated sentences and words, punctuation runs, CJK, giant words) and the
chunks the chunker cut from them before its rewrite for long records, with the regex test
counter and with the real model's tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from tests.fix_embedders import RegexTokenCounter

from embedplat.chunking import TokenCounter, chunk_text

PINNED: list[dict[str, Any]] = json.loads(
    (Path(__file__).with_name("chunking_pinned.json")).read_text(encoding="utf-8")
)["cases"]
NAMES = [case["name"] for case in PINNED]


def check_case(case: dict[str, Any], counter: TokenCounter, counter_name: str) -> None:
    text = case["text"]
    chunks = chunk_text(
        text, max_tokens=case["max_tokens"], overlap=case["overlap"], counter=counter
    )
    got = [[c.char_start, c.char_end, c.token_count] for c in chunks]
    expected = case["chunks"][counter_name]
    for i, (g, e) in enumerate(zip(got, expected, strict=False)):
        assert g == e, f"{case['name']}: chunk {i} is {g}, was {e}: {text[g[0] : g[1]][:80]!r}"
    assert len(got) == len(expected), f"{case['name']}: {len(got)} chunks, was {len(expected)}"
    for c in chunks:
        assert c.text == text[c.char_start : c.char_end]
        assert c.text_hash == hashlib.sha256(c.text.encode("utf-8")).digest()


@pytest.mark.parametrize("case", PINNED, ids=NAMES)
def test_regex_counter_chunks_are_unchanged(case: dict[str, Any]) -> None:
    check_case(case, RegexTokenCounter(), "regex")


@pytest.fixture(scope="module")
def model_counter() -> TokenCounter:
    from embedplat.embedders import load_embedder

    return load_embedder("all-MiniLM-L6-v2").token_counter()


@pytest.mark.model
@pytest.mark.parametrize("case", PINNED, ids=NAMES)
def test_model_tokenizer_chunks_are_unchanged(
    case: dict[str, Any], model_counter: TokenCounter
) -> None:
    check_case(case, model_counter, "minilm")
