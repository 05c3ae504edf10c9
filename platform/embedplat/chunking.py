"""Text -> chunks: token-aware, recursive, and stable under local edits.

Chunks are at most ``max_tokens`` tokens of the model's own tokenizer (special tokens not
counted), their text is exactly ``content[char_start:char_end]`` (never normalised; whitespace
around a chunk is left out by narrowing its span), and an edit of one paragraph re-forms only
the chunks near it, so the other chunks keep their text, their hash and their embedding.

The rule
--------
1. **Paragraphs** are the pieces between blank lines. A paragraph of at least
   ``max_tokens // 4`` tokens is *substantial*; a shorter one (a title, a heading, a list item)
   is *short*.
2. The boundary after a substantial paragraph is **hard**: no chunk ever spans it. The boundary
   after a short paragraph is soft, so a heading stays with the text that follows it. The runs
   between hard boundaries are **blocks**; whether a boundary is hard depends only on the
   paragraph before it, so an edit of paragraph *p* can only change the block that contains *p*
   (and, if *p* turns from substantial to short or back, join it with or part it from the block
   after it). Every other block, and so every chunk of it, stays exactly as it was.
3. A block that fits in ``max_tokens`` is one chunk. A longer block is cut at **sentence**
   boundaries (and at soft paragraph boundaries, which rank as sentence boundaries); a sentence
   that is too long on its own is cut at **word** boundaries; a single word longer than
   ``max_tokens`` is cut into character slices (never inside a grapheme cluster) as a last
   resort.
4. The cuts are content-defined, not greedy: a block that does not fit is cut at the candidate
   boundary whose preceding piece has the smallest content hash (blake2b), preferring sentence
   over word boundaries and boundaries that leave at least ``max_tokens // 4`` tokens on both
   sides; both halves are cut again the same way until every part fits. Like a treap, the cut
   points depend on the pieces' own text, not on their offset from the start, so a local edit
   changes the parts on the path to the edit (usually one chunk, sometimes two) instead of
   shifting every later cut the way greedy packing does.
5. A part that starts at a sentence or word boundary inside a paragraph is prefixed with up to
   ``overlap`` tokens of the preceding sentences of the same paragraph (whole sentences, or the
   trailing words of the previous sentence when it alone is longer than that). Overlap never
   crosses a paragraph boundary, so edits do not leak into a neighbouring paragraph's chunks.
   Parts are sized so that part plus overlap stays within ``max_tokens``.

Token counts
------------
Every sentence of a record is counted once, in one batched tokenizer call, and counts of joined
text are the sums of their pieces' counts (words and overlap tails are counted likewise, only
where they are needed). For tokenizers that pre-split on whitespace (WordPiece, as in
all-MiniLM-L6-v2, and most BPE/Unigram tokenizers) the sum equals the count of the joined text,
because every cut is at whitespace; where it does not, the sum errs on the high side. Character
slices are the exception (a sum over pieces of one word is not an upper bound), so two slices
are never put into one chunk. Changing this rule changes chunk texts and so re-embeds
everything: treat it as a format.

Cost
----
O(n log n) in the record's length, whatever its shape (one paragraph, repeated sentences, a
sentence of millions of words, a base64 blob, runs of spaces or dots): every piece is
counted once, the best cut of a range is a range minimum, a slice of a giant word is found
with probes about as long as the slice, and the patterns do not backtrack over long runs.
``tests/unit/test_chunking_scaling.py`` guards this; ``benchmarks/bench_chunking.py``
measures it.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from embedplat.errors import InvalidInputError

__all__ = ["Chunk", "TokenCounter", "chunk_text", "text_sha256"]


class TokenCounter(Protocol):
    """Counts the tokens of several texts at once, without special tokens.

    Implementations should make counts additive over whitespace: the count of ``a + " " + b``
    must not exceed ``count(a) + count(b)`` (true of WordPiece, BPE and Unigram tokenizers that
    pre-split on whitespace), because the chunker sums the counts of pieces it joins.
    """

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """One count per text, in order."""
        ...


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a record; ``text == content[char_start:char_end]``."""

    ordinal: int
    """0-based position in the record."""
    text: str
    char_start: int
    char_end: int
    token_count: int
    """Tokens of ``text`` by the model's tokenizer, special tokens not counted."""
    text_hash: bytes
    """SHA-256 of the UTF-8 text; equals PostgreSQL ``sha256(convert_to(text, 'UTF8'))``."""


def text_sha256(text: str) -> bytes:
    """SHA-256 of ``text``'s UTF-8 bytes (the database computes the same)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


# A blank line (possibly holding spaces or a \r) or a Unicode paragraph separator.
# The patterns must stay linear on long runs of spaces or dots: an alternative that scans a run
# and fails may start only at the first character of the run (the lookbehind after that first
# character), since from a later character of the same run it would fail too; quantifiers
# that backtracking cannot help are possessive (*+, ++); every alternative begins with a
# character class, so the engine skips ahead to where one can match. The matches are the same
# as those of the plain patterns (r"\n[^\S\n]*\n\s*|\s*\u2029\s*" and so on).
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*+\n\s*+|\u2029\s*+|\s(?<!\s\s)\s*\u2029\s*+")
# Where sentences end: . ! ? … (plus closing quotes/brackets) before whitespace, CJK full stops
# (no space needed), or a line break inside a paragraph (lists, verse, code).
_SENTENCE_BREAK = re.compile(
    r"[.!?\u2026](?<![.!?\u2026][.!?\u2026])[.!?\u2026]*+[\"'\u201d\u2019\u00bb)\]]*+(\s++)"
    r"|[\u3002\uff01\uff1f]++[\u300d\u300f\u201d\u2019\uff09]*+()"
    r"|(\s(?<!\s\s)\s*\n\s*+|\n\s*+)"
)
_WORD = re.compile(r"\S+")

# How a unit is joined to the one before it (the boundary's kind).
_HARD = 0  # first unit of a block: never inside a chunk
_PARAGRAPH = 1  # soft paragraph boundary (after a short paragraph): no overlap across it
_SENTENCE = 2  # sentence boundary inside a paragraph
_WORD_CUT = 3  # word boundary inside an over-long sentence
_SLICE_CUT = 4  # character boundary inside an over-long word: always cut

# Cut preference: higher first. Slice boundaries must always be cut; sentence and soft
# paragraph boundaries rank alike, so a title is cut from its text only if nothing better exists.
_RANK = {_PARAGRAPH: 2, _SENTENCE: 2, _WORD_CUT: 1, _SLICE_CUT: 3}
_OVERLAP_AFTER = (_SENTENCE, _WORD_CUT)

_ZWJ = "\u200d"


@dataclass(slots=True)
class _Block:
    """Units of one block (parallel lists), before they are cut into parts."""

    starts: list[int]
    ends: list[int]
    tokens: list[int]
    kinds: list[int]  # boundary kind before each unit; kinds[0] is _HARD
    paragraphs: list[int]  # paragraph index of each unit
    sentences: list[bool]  # whether the unit is a whole sentence (for word-tail overlap)


def chunk_text(text: str, *, max_tokens: int, overlap: int, counter: TokenCounter) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``max_tokens`` tokens (rule: see the module doc).

    ``overlap`` tokens of the preceding sentences are repeated at the start of a chunk that
    continues a paragraph. Empty or whitespace-only text gives ``[]``.
    """
    if max_tokens < 1:
        raise InvalidInputError(f"max_tokens must be at least 1, got {max_tokens}")
    if overlap < 0 or overlap >= max_tokens:
        raise InvalidInputError(
            f"overlap must be at least 0 and below max_tokens ({max_tokens}), got {overlap}"
        )
    paragraphs = _pieces(text, 0, len(text), _PARAGRAPH_BREAK)
    if not paragraphs:
        return []

    # Every sentence of the record in one tokenizer call; paragraph sizes are their sums.
    sentence_spans: list[tuple[int, int]] = []
    sentence_paragraph: list[int] = []
    for index, (start, end) in enumerate(paragraphs):
        for span in _sentences(text, start, end):
            sentence_spans.append(span)
            sentence_paragraph.append(index)
    sentence_tokens = counter.count_tokens([text[s:e] for s, e in sentence_spans])
    paragraph_tokens = [0] * len(paragraphs)
    for index, tokens in zip(sentence_paragraph, sentence_tokens, strict=True):
        paragraph_tokens[index] += tokens

    short_limit = max_tokens // 4
    blocks = _blocks(
        sentence_spans, sentence_tokens, sentence_paragraph, paragraph_tokens, short_limit
    )

    # (start, end, tokens) of each chunk's own text, plus what its overlap may be taken from.
    parts: list[tuple[int, int, int, _Overlap]] = []
    long_blocks = [b for b in blocks if sum(b.tokens) > max_tokens]
    long_ids = {id(b) for b in long_blocks}
    _split_long_units(text, long_blocks, max_tokens, counter)
    for block in blocks:
        if id(block) not in long_ids:
            parts.append((block.starts[0], block.ends[-1], sum(block.tokens), None))
            continue
        parts.extend(_cut_block(text, block, max_tokens, overlap, short_limit))

    tails = _resolve_overlaps(text, [p[3] for p in parts], counter)
    chunks: list[Chunk] = []
    for ordinal, ((start, end, tokens, _), tail) in enumerate(zip(parts, tails, strict=True)):
        if tail is not None:
            start, tokens = tail[0], tokens + tail[1]
        body = text[start:end]
        chunks.append(Chunk(ordinal, body, start, end, tokens, text_sha256(body)))
    return chunks


# -- splitting ---------------------------------------------------------------------------------


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _pieces(text: str, start: int, end: int, separator: re.Pattern[str]) -> list[tuple[int, int]]:
    """Non-blank, trimmed spans of ``text[start:end]`` between matches of ``separator``."""
    out: list[tuple[int, int]] = []
    position = start
    for match in separator.finditer(text, start, end):
        s, e = _trim(text, position, match.start())
        if s < e:
            out.append((s, e))
        position = match.end()
    s, e = _trim(text, position, end)
    if s < e:
        out.append((s, e))
    return out


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Trimmed sentence spans of one (trimmed) paragraph."""
    out: list[tuple[int, int]] = []
    position = start
    for match in _SENTENCE_BREAK.finditer(text, start, end):
        group = 1 if match.start(1) >= 0 else 2 if match.start(2) >= 0 else 3
        gap_start, gap_end = match.span(group)
        s, e = _trim(text, position, gap_start)
        if s < e:
            out.append((s, e))
        position = gap_end
    s, e = _trim(text, position, end)
    if s < e:
        out.append((s, e))
    return out


def _blocks(
    spans: list[tuple[int, int]],
    tokens: list[int],
    paragraph_of: list[int],
    paragraph_tokens: list[int],
    short_limit: int,
) -> list[_Block]:
    """Group sentences into blocks: a hard boundary follows every substantial paragraph."""
    blocks: list[_Block] = []
    current: _Block | None = None
    previous_paragraph = -1
    for (start, end), count, paragraph in zip(spans, tokens, paragraph_of, strict=True):
        if paragraph != previous_paragraph:
            hard = previous_paragraph < 0 or paragraph_tokens[previous_paragraph] >= short_limit
            kind = _HARD if hard else _PARAGRAPH
            previous_paragraph = paragraph
        else:
            kind = _SENTENCE
        if kind == _HARD or current is None:
            current = _Block([], [], [], [], [], [])
            blocks.append(current)
        current.starts.append(start)
        current.ends.append(end)
        current.tokens.append(count)
        current.kinds.append(kind)
        current.paragraphs.append(paragraph)
        current.sentences.append(True)
    return blocks


def _split_long_units(
    text: str, blocks: list[_Block], max_tokens: int, counter: TokenCounter
) -> None:
    """Replace sentences longer than ``max_tokens`` by their words (giant words by slices).

    All such sentences of the record are counted in one call.
    """
    todo: list[tuple[_Block, int, list[tuple[int, int]]]] = []
    for block in blocks:
        for i, count in enumerate(block.tokens):
            if count > max_tokens:
                words = [m.span() for m in _WORD.finditer(text, block.starts[i], block.ends[i])]
                todo.append((block, i, words))
    if not todo:
        return
    flat = [text[s:e] for _, _, words in todo for s, e in words]
    counts = iter(counter.count_tokens(flat))
    replacements: dict[int, dict[int, list[tuple[int, int, int, int]]]] = {}
    for block, i, words in todo:
        units: list[tuple[int, int, int, int]] = []  # (start, end, tokens, kind)
        for n, (s, e) in enumerate(words):
            count = next(counts)
            kind = block.kinds[i] if n == 0 else _WORD_CUT
            if count <= max_tokens:
                units.append((s, e, count, kind))
                continue
            for m, (ss, se, sc) in enumerate(_slices(text, s, e, count, max_tokens, counter)):
                units.append((ss, se, sc, kind if m == 0 else _SLICE_CUT))
        replacements.setdefault(id(block), {})[i] = units
    for block in blocks:
        changes = replacements.get(id(block))
        if not changes:
            continue
        new = _Block([], [], [], [], [], [])
        for i in range(len(block.starts)):
            expanded = changes.get(i)
            if expanded is None:
                new.starts.append(block.starts[i])
                new.ends.append(block.ends[i])
                new.tokens.append(block.tokens[i])
                new.kinds.append(block.kinds[i])
                new.paragraphs.append(block.paragraphs[i])
                new.sentences.append(block.sentences[i])
                continue
            for s, e, count, kind in expanded:
                new.starts.append(s)
                new.ends.append(e)
                new.tokens.append(count)
                new.kinds.append(kind)
                new.paragraphs.append(block.paragraphs[i])
                new.sentences.append(False)
        block.starts, block.ends, block.tokens = new.starts, new.ends, new.tokens
        block.kinds, block.paragraphs, block.sentences = new.kinds, new.paragraphs, new.sentences


def _is_cluster_boundary(text: str, i: int) -> bool:
    """Whether a cut before ``text[i]`` keeps grapheme clusters (marks, ZWJ emoji) whole."""
    ch = text[i]
    if text[i - 1] == _ZWJ or ch == _ZWJ:
        return False
    if unicodedata.category(ch) in ("Mn", "Mc", "Me"):
        return False
    code = ord(ch)
    if 0x1F1E6 <= code <= 0x1F1FF and 0x1F1E6 <= ord(text[i - 1]) <= 0x1F1FF:
        return False  # regional indicators pair up into flags
    # Variation selectors, emoji skin tones and tag characters attach to what precedes them.
    return not (
        0xFE00 <= code <= 0xFE0F
        or 0x1F3FB <= code <= 0x1F3FF
        or 0xE0020 <= code <= 0xE007F
        or 0xE0100 <= code <= 0xE01EF
    )


def _slices(
    text: str, start: int, end: int, tokens: int, max_tokens: int, counter: TokenCounter
) -> list[tuple[int, int, int]]:
    """Cut one word of ``tokens`` tokens (more than ``max_tokens``) into slices that fit, greedily.

    Cuts fall between grapheme clusters; only a cluster that alone exceeds ``max_tokens``
    (a long run of combining marks) is cut between code points. Reached only for pathological
    input (a base64 blob, a run of symbols), so candidate slices are counted one at a time.
    """
    # Characters per token, to guess where a slice of max_tokens ends: the word's own, then the
    # last slice's. Only the number of probes depends on it, never the slice found.
    chars_per_token = (end - start) / max(tokens, 1)

    def furthest_fit(position: int, ends: Sequence[int], first: int) -> tuple[int, int] | None:
        # The furthest of ends[first:] whose slice fits: the end a binary search over all of
        # them finds where counts grow with length, but found by probing where the counts so
        # far say the limit falls. Until a probe is too long, each probe goes at least a
        # quarter further than the last fit; after that, a probe that does not halve the
        # range is followed by a bisection of it. So each probe counts a slice not much
        # longer than the one found (a bisection over the rest of the word would count up to
        # the word's length for every slice: quadratic in the word). Counts need not grow
        # with length, so only checked ends are returned.
        lo, hi = first, len(ends) - 1
        best: tuple[int, int] | None = None
        fit_end, fit_count = position, 0
        fail_end, fail_count = -1, 0
        bisect_next = False
        while lo <= hi:
            if bisect_next:
                probe = (lo + hi) // 2
            else:
                if fail_end < 0 or fail_count <= fit_count:
                    per_token = chars_per_token
                else:
                    per_token = (fail_end - fit_end) / (fail_count - fit_count)
                guess = fit_end + (max_tokens + 1 - fit_count) * per_token - 1
                probe = bisect.bisect_left(ends, guess, lo, hi + 1)
                if fail_end < 0:
                    probe = max(probe, lo + (lo - first) // 4)
                probe = min(max(probe, lo), hi)
            width = hi - lo
            count = counter.count_tokens([text[position : ends[probe]]])[0]
            if count <= max_tokens:
                best = (ends[probe], count)
                fit_end, fit_count = ends[probe], count
                lo = probe + 1
            else:
                fail_end, fail_count = ends[probe], count
                hi = probe - 1
            bisect_next = fail_end >= 0 and not bisect_next and 2 * (hi - lo) > width
        return best

    cuts = [i for i in range(start + 1, end) if _is_cluster_boundary(text, i)] + [end]
    out: list[tuple[int, int, int]] = []
    position = start
    first = 0  # index into cuts of the first cut after `position`
    while position < end:
        found = furthest_fit(position, cuts, first)
        if found is None:
            found = furthest_fit(position, range(position + 1, cuts[first]), 0)
            if found is None:
                raise InvalidInputError(
                    f"max_tokens={max_tokens} is too small: the character "
                    f"{text[position]!r} alone is more tokens than that"
                )
        out.append((position, found[0], found[1]))
        if found[1] > 0:  # a slice of no tokens says nothing about the next one
            chars_per_token = (found[0] - position) / found[1]
        position = found[0]
        while first < len(cuts) and cuts[first] <= position:
            first += 1
    return out


# -- cutting a long block ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TailRequest:
    """A part's overlap is to be the trailing words of one sentence, within a budget."""

    sentence: tuple[int, int]
    tokens: int  # of the whole sentence (more than budget)
    budget: int


# What a part's overlap is: (start, tokens) of whole preceding units, a word-tail request, or
# nothing.
_Overlap = tuple[int, int] | _TailRequest | None


def _cut_key(text: str, start: int, end: int) -> int:
    digest = hashlib.blake2b(text[start:end].encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class _MinTree:
    """Minimum of any range of a fixed list of ints in O(log n) (a bottom-up segment tree)."""

    __slots__ = ("_empty", "_size", "_tree")

    def __init__(self, values: list[int], empty: int) -> None:
        size = len(values)
        tree = [empty] * size + values
        for i in range(size - 1, 0, -1):
            left, right = tree[2 * i], tree[2 * i + 1]
            tree[i] = left if left < right else right
        self._size, self._tree, self._empty = size, tree, empty

    def min(self, lo: int, hi: int) -> int:
        """Minimum of ``values[lo:hi]``; ``empty`` for an empty range."""
        tree = self._tree
        best = self._empty
        lo += self._size
        hi += self._size
        while lo < hi:
            if lo & 1:
                if tree[lo] < best:
                    best = tree[lo]
                lo += 1
            if hi & 1:
                hi -= 1
                if tree[hi] < best:
                    best = tree[hi]
            lo >>= 1
            hi >>= 1
        return best


def _cut_block(
    text: str, block: _Block, max_tokens: int, overlap: int, short_limit: int
) -> list[tuple[int, int, int, _Overlap]]:
    """Cut a block that does not fit into parts that do (rule 4), with overlap (rule 5)."""
    n = len(block.starts)
    prefix = [0] * (n + 1)
    slice_prefix = [0] * (n + 1)  # slice boundaries before unit i, counted
    for i in range(n):
        prefix[i + 1] = prefix[i] + block.tokens[i]
        slice_prefix[i + 1] = slice_prefix[i] + (block.kinds[i] == _SLICE_CUT)

    def fits(lo: int, hi: int) -> bool:
        if hi - lo == 1:
            return True  # single units were sized to fit on their own
        if slice_prefix[hi] - slice_prefix[lo + 1] > 0:
            return False
        return prefix[hi] - prefix[lo] + room(lo) <= max_tokens

    def room(lo: int) -> int:
        return overlap if lo > 0 and block.kinds[lo] in _OVERLAP_AFTER else 0

    # Rank of a boundary: its kind, then whether both sides keep max_tokens // 4 tokens, then
    # the content hash of the piece before it. Never the position or the total size: those
    # change with edits elsewhere in the block. Each boundary's kind, hash and position are
    # packed into one int that sorts like (kind, hash, position), so the best cut of a range
    # is a range minimum (taken from a segment tree, in O(log n)): a scan of every boundary
    # for every cut is quadratic when cuts fall near the ends of their ranges (repeated text,
    # where equal hashes tie and the first one wins). Position last: among equal ranks the
    # first boundary wins.
    shift = n.bit_length()
    balance_bit = 1 << (64 + shift)
    position_mask = (1 << shift) - 1
    empty = 1 << (67 + shift)  # above every packed rank
    ranked = [empty] + [
        ((3 - _RANK[block.kinds[b]]) << (65 + shift))
        | (_cut_key(text, block.starts[b - 1], block.ends[b - 1]) << shift)
        | b
        for b in range(1, n)
    ]
    tree = _MinTree(ranked, empty)

    def best_cut(lo: int, hi: int) -> int:
        # Boundaries b in [first, stop) leave at least short_limit tokens on both sides
        # (prefix is non-decreasing); the others rank after them within the same kind.
        first = bisect.bisect_left(prefix, prefix[lo] + short_limit, lo + 1, hi)
        stop = bisect.bisect_right(prefix, prefix[hi] - short_limit, lo + 1, hi)
        if first < stop:
            balanced = tree.min(first, stop)
            unbalanced = min(tree.min(lo + 1, first), tree.min(stop, hi)) | balance_bit
            best = min(balanced, unbalanced)
        else:
            best = tree.min(lo + 1, hi)
        return best & position_mask

    leaves: list[tuple[int, int]] = []
    stack = [(0, n)]
    while stack:
        lo, hi = stack.pop()
        if fits(lo, hi):
            leaves.append((lo, hi))
            continue
        cut = best_cut(lo, hi)
        stack.append((cut, hi))
        stack.append((lo, cut))

    parts: list[tuple[int, int, int, _Overlap]] = []
    previous_lo = 0
    for lo, hi in leaves:
        tokens = prefix[hi] - prefix[lo]
        source: _Overlap = None
        # A single unit may be bigger than max_tokens - overlap: it then gets less overlap.
        budget = min(overlap, max_tokens - tokens)
        if lo > 0 and block.kinds[lo] in _OVERLAP_AFTER and budget > 0:
            source = _overlap_source(block, lo, previous_lo, budget)
        previous_lo = lo
        parts.append((block.starts[lo], block.ends[hi - 1], tokens, source))
    return parts


def _overlap_source(block: _Block, lo: int, previous_lo: int, budget: int) -> _Overlap:
    """Whole units before ``lo`` in the same paragraph worth at most ``budget`` tokens.

    Never the whole previous part (from ``previous_lo``): a chunk must not contain the one
    before it.
    """
    paragraph = block.paragraphs[lo]
    taken = 0
    j = lo
    while (
        j - 1 > previous_lo
        and block.paragraphs[j - 1] == paragraph
        and block.kinds[j] in _OVERLAP_AFTER
    ):
        if taken + block.tokens[j - 1] > budget:
            break
        j -= 1
        taken += block.tokens[j]
    if j < lo:
        return (block.starts[j], taken)
    if block.sentences[lo - 1]:
        # The previous sentence alone is too long: its trailing words will do.
        return _TailRequest(
            (block.starts[lo - 1], block.ends[lo - 1]), block.tokens[lo - 1], budget
        )
    return None


def _resolve_overlaps(
    text: str, overlaps: Sequence[_Overlap], counter: TokenCounter
) -> list[tuple[int, int] | None]:
    """(start, tokens) of each part's overlap, or None.

    A word tail is found by guessing how many trailing words make ``budget`` tokens (in
    proportion to the sentence's count) and counting that suffix; a guess that is too long is
    shrunk and counted again. All guesses of a round share one tokenizer call, and counting a
    few suffixes is much cheaper than counting every word.
    """
    out: list[tuple[int, int] | None] = []
    # (part index, request, word starts, words to take)
    pending: list[tuple[int, _TailRequest, list[int], int]] = []
    for index, overlap in enumerate(overlaps):
        out.append(None)
        if isinstance(overlap, _TailRequest):
            starts = [m.start() for m in _WORD.finditer(text, *overlap.sentence)]
            # Never the whole sentence: it is known not to fit.
            take = min(len(starts) - 1, len(starts) * overlap.budget // max(overlap.tokens, 1))
            if take >= 1:
                pending.append((index, overlap, starts, take))
        else:
            out[index] = overlap
    while pending:
        counts = counter.count_tokens(
            [text[starts[-take] : request.sentence[1]] for _, request, starts, take in pending]
        )
        retry: list[tuple[int, _TailRequest, list[int], int]] = []
        for (index, request, starts, take), count in zip(pending, counts, strict=True):
            if count <= request.budget:
                out[index] = (starts[-take], count)
            elif take > 1:
                retry.append(
                    (index, request, starts, max(1, min(take - 1, take * request.budget // count)))
                )
        pending = retry
    return out
