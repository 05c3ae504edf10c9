"""Text -> chunks: token-aware, recursive, and stable under local edits.

The rule, chosen so that editing one paragraph changes only the chunks containing it:

1. The text is cut into **paragraphs** at blank lines. Paragraph boundaries are the only places
   where chunks of different paragraphs meet.
2. A paragraph longer than ``max_tokens`` is split on its own, at **sentence** boundaries, then
   at **word** boundaries, and as a last resort into character slices; the pieces are packed
   greedily into chunks of at most ``max_tokens``, each chunk repeating up to ``overlap`` tokens
   of trailing pieces from the previous one. Overlap never crosses a paragraph boundary, so an
   edit cannot leak into a neighbouring paragraph's chunks.
3. Short paragraphs are merged with their successors while the sum fits in ``max_tokens``, but
   a merged group always ends after an **anchor** paragraph — one whose text hash is divisible
   by ``ANCHOR_EVERY`` — and before and after a long (split) paragraph. Anchors depend only on a
   paragraph's own text, so an edit can shift group boundaries only between the anchors around
   it (on average a few paragraphs), never across the whole record.

Token counts come from the model's tokenizer, counted per piece in batches (never by
re-tokenising growing strings) and summed; for WordPiece/BPE tokenizers that pre-split on
whitespace the sum matches the count of the joined text (within a token or two at rare joins;
the default 200-token target leaves headroom in the model's 256-token window). Chunk
text is exactly ``content[char_start:char_end]``; whitespace around chunks is not part of them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

ANCHOR_EVERY = 3

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# A sentence ends after . ! ? (with closing quotes/brackets) followed by whitespace, or at a
# line break inside a paragraph (lists, verse, code).
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\)\]»”’]*\s+|\s*\n\s*")
_WORD = re.compile(r"\S+")


class TokenCounter(Protocol):
    """Counts tokens of several texts at once (without special tokens)."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """One count per text."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a record: ``text == content[char_start:char_end]``."""

    ordinal: int
    text: str
    char_start: int
    char_end: int
    token_count: int
    text_hash: bytes

    @classmethod
    def of(cls, content: str, ordinal: int, start: int, end: int, tokens: int) -> Chunk:
        text = content[start:end]
        return cls(ordinal, text, start, end, tokens, text_sha256(text))


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    tokens: int


def text_sha256(text: str) -> bytes:
    """SHA-256 of the UTF-8 bytes; equals the database's ``embedplat.text_sha256``."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def chunk_text(text: str, *, max_tokens: int, overlap: int, counter: TokenCounter) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``max_tokens`` tokens (see the module docstring)."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if overlap < 0 or overlap >= max_tokens:
        raise ValueError("overlap must be at least 0 and below max_tokens")
    paragraphs = _split(text, 0, len(text), _PARAGRAPH_BREAK)
    if not paragraphs:
        return []
    counts = counter.count_tokens([text[s:e] for s, e in paragraphs])
    spans: list[tuple[int, int, int]] = []  # (start, end, tokens) of every chunk, in order
    group: list[_Span] = []

    def close_group() -> None:
        if group:
            spans.append((group[0].start, group[-1].end, sum(p.tokens for p in group)))
            group.clear()

    for (start, end), tokens in zip(paragraphs, counts, strict=True):
        if tokens > max_tokens:
            close_group()
            spans.extend(_split_long(text, start, end, max_tokens, overlap, counter))
            continue
        if group and sum(p.tokens for p in group) + tokens > max_tokens:
            close_group()
        group.append(_Span(start, end, tokens))
        if _is_anchor(text[start:end]):
            close_group()
    close_group()
    return [Chunk.of(text, i, s, e, t) for i, (s, e, t) in enumerate(spans)]


def _is_anchor(paragraph: str) -> bool:
    digest = hashlib.blake2b(paragraph.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big") % ANCHOR_EVERY == 0


def _split(text: str, start: int, end: int, separator: re.Pattern[str]) -> list[tuple[int, int]]:
    """Non-blank pieces of ``text[start:end]`` between matches of ``separator``, trimmed."""
    pieces: list[tuple[int, int]] = []
    position = start
    for match in separator.finditer(text, start, end):
        pieces.append((position, match.start()))
        position = match.end()
    pieces.append((position, end))
    trimmed = []
    for s, e in pieces:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            trimmed.append((s, e))
    return trimmed


def _pieces(
    text: str, start: int, end: int, max_tokens: int, counter: TokenCounter
) -> list[_Span]:
    """Sentences of a long paragraph, with over-long sentences cut into words, then slices."""
    sentences = _split(text, start, end, _SENTENCE_END)
    counts = counter.count_tokens([text[s:e] for s, e in sentences])
    out: list[_Span] = []
    for (s, e), tokens in zip(sentences, counts, strict=True):
        if tokens <= max_tokens:
            out.append(_Span(s, e, tokens))
            continue
        words = [(m.start(), m.end()) for m in _WORD.finditer(text, s, e)]
        word_counts = counter.count_tokens([text[ws:we] for ws, we in words])
        for (ws, we), wt in zip(words, word_counts, strict=True):
            if wt <= max_tokens:
                out.append(_Span(ws, we, wt))
            else:
                out.extend(_slices(text, ws, we, max_tokens, counter))
    return out


def _slices(text: str, start: int, end: int, max_tokens: int, counter: TokenCounter) -> list[_Span]:
    """Cut one giant word into character slices of at most ``max_tokens`` tokens each."""
    width = max(1, max_tokens)  # a token covers at least one character
    while True:
        bounds = [(s, min(s + width, end)) for s in range(start, end, width)]
        counts = counter.count_tokens([text[s:e] for s, e in bounds])
        if max(counts) <= max_tokens or width == 1:
            return [_Span(s, e, c) for (s, e), c in zip(bounds, counts, strict=True)]
        width = max(1, width // 2)


def _split_long(
    text: str, start: int, end: int, max_tokens: int, overlap: int, counter: TokenCounter
) -> list[tuple[int, int, int]]:
    """Greedy packing of one long paragraph's pieces, with overlap inside the paragraph."""
    pieces = _pieces(text, start, end, max_tokens, counter)
    spans: list[tuple[int, int, int]] = []
    first = 0
    while first < len(pieces):
        last = first
        total = pieces[first].tokens
        while last + 1 < len(pieces) and total + pieces[last + 1].tokens <= max_tokens:
            last += 1
            total += pieces[last].tokens
        spans.append((pieces[first].start, pieces[last].end, total))
        if last + 1 >= len(pieces):
            break
        # The next chunk starts with trailing pieces of this one worth at most `overlap` tokens,
        # but always moves forward.
        next_first = last + 1
        carried = 0
        while next_first - 1 > first and carried + pieces[next_first - 1].tokens <= overlap:
            next_first -= 1
            carried += pieces[next_first].tokens
        # Make sure the carried pieces plus the next piece still fit.
        while next_first <= last and carried + pieces[last + 1].tokens > max_tokens:
            carried -= pieces[next_first].tokens
            next_first += 1
        first = next_first
    return spans
