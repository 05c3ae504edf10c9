"""Chunking: spans, token limits, Unicode, and stability of chunks under local edits."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tests.fix_embedders import RegexTokenCounter

from embedplat.chunking import Chunk, TokenCounter, chunk_text
from embedplat.errors import InvalidInputError

COUNTER = RegexTokenCounter()
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def count(text: str) -> int:
    return COUNTER.count_tokens([text])[0]


# -- text generators -----------------------------------------------------------------------------

# Letters of several scripts, digits, CJK, emoji (with skin tones, ZWJ families and flags),
# decomposed accents, right-to-left letters and in-word punctuation.
GLYPHS = [
    *"abcdefghijklmnopqrstuvwxyz",
    *"ABCXYZ0123456789",
    "é",
    "ß",
    "ж",
    "ω",
    "中",
    "文",
    "字",
    "😀",
    "👍🏽",
    "👨\u200d👩\u200d👧",
    "🇫🇷",
    "e\u0301",
    "n\u0303\u0323",
    "\u0627",  # Arabic alef
    "\u0628",  # Arabic beh
    "-",
    "'",
    "\u2019",  # right single quotation mark
]
words = st.lists(st.sampled_from(GLYPHS), min_size=1, max_size=8).map("".join)
sentences = st.builds(
    lambda ws, end: " ".join(ws) + end,
    st.lists(words, min_size=1, max_size=20),
    st.sampled_from([".", "!", "?", "。", "", "…", '."', "?)"]),
)
paragraphs = st.builds(
    lambda ss, sep: sep.join(ss),
    st.lists(sentences, min_size=1, max_size=6),
    st.sampled_from([" ", "  ", "\n", " \n"]),
)
PARAGRAPH_SEPARATORS = ["\n\n", "\n \n", "\r\n\r\n", "\n\n\n", "\n\t\n  "]
documents = st.builds(
    lambda ps, sep, lead, trail: lead + sep.join(ps) + trail,
    st.lists(paragraphs, max_size=10),
    st.sampled_from(PARAGRAPH_SEPARATORS),
    st.sampled_from(["", " ", "\n\n", "\t"]),
    st.sampled_from(["", "\n", "  \n\n"]),
)
any_text = st.one_of(documents, st.text(max_size=400))
limits = st.integers(min_value=8, max_value=80).flatmap(
    lambda m: st.tuples(st.just(m), st.integers(min_value=0, max_value=m // 2))
)


def chunk(text: str, max_tokens: int = 200, overlap: int = 32) -> list[Chunk]:
    return chunk_text(text, max_tokens=max_tokens, overlap=overlap, counter=COUNTER)


# -- (1) spans, coverage, hashes; (2) token limits ------------------------------------------------


def check_chunks(text: str, chunks: Sequence[Chunk], max_tokens: int) -> None:
    covered = [False] * len(text)
    previous: Chunk | None = None
    for i, c in enumerate(chunks):
        assert c.ordinal == i
        assert 0 <= c.char_start < c.char_end <= len(text)
        assert c.text == text[c.char_start : c.char_end]
        assert c.text == c.text.strip(), "whitespace around a chunk belongs to no chunk"
        assert c.text_hash == hashlib.sha256(c.text.encode("utf-8")).digest()
        assert c.token_count == count(c.text), "summed counts must equal the real count"
        assert c.token_count <= max_tokens
        if previous is not None:
            assert c.char_start > previous.char_start and c.char_end > previous.char_end
            if c.char_start < previous.char_end:
                # Overlap stays inside one paragraph: no blank line in the shared text.
                shared = text[c.char_start : previous.char_end]
                assert "\n\n" not in shared.replace("\r", "").replace(" ", "")
        for k in range(c.char_start, c.char_end):
            covered[k] = True
        previous = c
    missed = [k for k, ch in enumerate(text) if not ch.isspace() and not covered[k]]
    assert not missed, f"characters not in any chunk at {missed[:5]}"


@PROPERTY
@given(text=any_text, limits=limits)
def test_chunks_cover_text_in_order_within_limits(text: str, limits: tuple[int, int]) -> None:
    max_tokens, overlap = limits
    check_chunks(text, chunk(text, max_tokens, overlap), max_tokens)


@PROPERTY
@given(text=documents)
def test_default_limits(text: str) -> None:
    check_chunks(text, chunk(text), 200)


@given(text=st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2028\u2029\u3000", max_size=50))
def test_empty_and_whitespace_give_no_chunks(text: str) -> None:
    assert chunk(text) == []


def test_chunking_is_deterministic() -> None:
    text = document(random.Random(3), 12)
    assert chunk(text, 60, 10) == chunk(text, 60, 10)


# -- (3) stability ----------------------------------------------------------------------------


def join_paragraphs(paras: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    spans: list[tuple[int, int]] = []
    position = 0
    for p in paras:
        spans.append((position, position + len(p)))
        position += len(p) + 2
    return "\n\n".join(paras), spans


def outside(c: Chunk, start: int, end: int) -> bool:
    return c.char_end <= start or c.char_start >= end


def edit_region(old: Sequence[str], new: Sequence[str], i: int, max_tokens: int) -> tuple[int, int]:
    """Paragraph indices [a, b] of the blocks an edit of paragraph i may touch (module rule 2).

    A block ends after each substantial paragraph (>= max_tokens // 4 tokens), so it reaches
    back to just after the last substantial paragraph before i, and on to the first paragraph
    at or after i that is substantial in both versions.
    """

    def substantial(p: str) -> bool:
        return count(p) >= max_tokens // 4

    a = next((j + 1 for j in range(i - 1, -1, -1) if substantial(old[j])), 0)
    b = next(
        (j for j in range(i, len(new)) if substantial(old[j]) and substantial(new[j])),
        len(new) - 1,
    )
    return a, b


@PROPERTY
@given(
    paras=st.lists(paragraphs, min_size=2, max_size=12),
    replacement=paragraphs,
    data=st.data(),
    limits=limits,
)
def test_edit_changes_only_chunks_of_its_blocks(
    paras: list[str], replacement: str, data: st.DataObject, limits: tuple[int, int]
) -> None:
    max_tokens, overlap = limits
    i = data.draw(st.integers(min_value=0, max_value=len(paras) - 1))
    new_paras = [*paras[:i], replacement, *paras[i + 1 :]]
    old_text, old_spans = join_paragraphs(paras)
    new_text, new_spans = join_paragraphs(new_paras)
    old = chunk(old_text, max_tokens, overlap)
    new = chunk(new_text, max_tokens, overlap)
    a, b = edit_region(paras, new_paras, i, max_tokens)
    old_texts = {c.text for c in old}
    new_texts = {c.text for c in new}
    for c in new:
        if outside(c, new_spans[a][0], new_spans[b][1]):
            assert c.text in old_texts, "a chunk away from the edit changed"
    for c in old:
        if outside(c, old_spans[a][0], old_spans[b][1]):
            assert c.text in new_texts, "a chunk away from the edit disappeared"


substantial_paragraphs = st.lists(sentences, min_size=3, max_size=10).map(" ".join)


@PROPERTY
@given(
    paras=st.lists(substantial_paragraphs, min_size=2, max_size=10),
    replacement=substantial_paragraphs,
    data=st.data(),
)
def test_edit_of_one_paragraph_changes_only_its_chunks(
    paras: list[str], replacement: str, data: st.DataObject
) -> None:
    # With neighbours of at least max_tokens // 4 tokens, every paragraph is its own block: the
    # chunks that do not overlap the edited paragraph are exactly the same before and after.
    max_tokens, overlap = 40, 8
    assume(all(count(p) >= max_tokens // 4 for p in [*paras, replacement]))
    i = data.draw(st.integers(min_value=0, max_value=len(paras) - 1))
    new_paras = [*paras[:i], replacement, *paras[i + 1 :]]
    old_text, old_spans = join_paragraphs(paras)
    new_text, new_spans = join_paragraphs(new_paras)
    old = chunk(old_text, max_tokens, overlap)
    new = chunk(new_text, max_tokens, overlap)
    kept_old = [c.text for c in old if outside(c, *old_spans[i])]
    kept_new = [c.text for c in new if outside(c, *new_spans[i])]
    assert kept_old == kept_new
    changed = Counter(c.text for c in new) - Counter(c.text for c in old)
    touching = [c for c in new if not outside(c, *new_spans[i])]
    assert changed.total() <= len(touching)


VOCABULARY = [
    "the",
    "cell",
    "protein",
    "gene",
    "expression",
    "patients",
    "study",
    "results",
    "increased",
    "reduced",
    "model",
    "data",
    "analysis",
    "response",
    "treatment",
    "risk",
    "cancer",
    "immune",
    "signal",
    "pathway",
    "levels",
    "significant",
    "human",
    "mouse",
    "clinical",
    "trial",
    "effect",
    "associated",
    "receptor",
    "binding",
    "growth",
    "factor",
    "tissue",
]


def sentence(rng: random.Random) -> str:
    ws = [rng.choice(VOCABULARY) for _ in range(rng.randint(6, 28))]
    if rng.random() < 0.3:
        ws[rng.randrange(len(ws))] += ","
    return " ".join(ws).capitalize() + "."


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def document(rng: random.Random, n: int) -> str:
    return "\n\n".join(paragraph(rng, rng.randint(2, 14)) for _ in range(n))


def changed_chunks(old: str, new: str) -> int:
    """Chunks of ``new`` whose text is not among ``old``'s: what would be re-embedded."""
    before = Counter(c.text for c in chunk(old))
    return (Counter(c.text for c in chunk(new)) - before).total()


def test_editing_one_paragraph_of_twenty_changes_at_most_two_chunks() -> None:
    rng = random.Random(20)
    paras = [paragraph(rng, rng.randint(2, 22)) for _ in range(20)]
    text = "\n\n".join(paras)
    assert len(chunk(text)) >= 26  # several paragraphs span two or three chunks
    changes: list[int] = []
    for i, para in enumerate(paras):
        words = para.split(" ")
        k = rng.randrange(len(words))
        edits = {
            "word": " ".join([*words[:k], "EDITED", *words[k + 1 :]]),
            "append": para + " " + sentence(rng),
            "prepend": sentence(rng) + " " + para,
        }
        for kind, edited in edits.items():
            new_text = "\n\n".join([*paras[:i], edited, *paras[i + 1 :]])
            changed = changed_chunks(text, new_text)
            assert 1 <= changed <= 2, f"{kind} edit of paragraph {i} changed {changed} chunks"
            changes.append(changed)
    assert sum(changes) / len(changes) <= 1.5


def test_edit_inside_a_long_paragraph_changes_few_chunks() -> None:
    # A 60-sentence paragraph is cut at content-defined sentence boundaries, so an edit does
    # not shift every later chunk the way greedy packing would.
    rng = random.Random(7)
    sents = [sentence(rng) for _ in range(60)]
    text = " ".join(sents)
    total = len(chunk(text))
    assert total >= 8
    for k in range(0, 60, 3):
        edited = " ".join([*sents[:k], sentence(rng), *sents[k + 1 :]])
        assert changed_chunks(text, edited) <= 3


# -- behaviour details -----------------------------------------------------------------------


def test_short_text_is_one_chunk() -> None:
    text = "  Title\n\nA short body. With two sentences.\n"
    [c] = chunk(text)
    assert c.text == "Title\n\nA short body. With two sentences."
    assert (c.char_start, c.char_end, c.ordinal) == (2, 42, 0)
    assert c.token_count == count(c.text)


def test_title_stays_with_the_start_of_a_long_abstract() -> None:
    rng = random.Random(1)
    text = "A short title about cells\n\n" + paragraph(rng, 30)
    chunks = chunk(text)
    assert len(chunks) > 1
    assert chunks[0].text.startswith("A short title about cells\n\n")


def test_substantial_paragraphs_are_never_merged() -> None:
    rng = random.Random(2)
    paras = [paragraph(rng, 5) for _ in range(4)]
    assert all(50 <= count(p) <= 200 for p in paras)
    chunks = chunk("\n\n".join(paras))
    assert [c.text for c in chunks] == paras


def test_overlap_repeats_preceding_sentences_of_the_same_paragraph() -> None:
    sents = [f"Sentence {i} is here." for i in range(40)]  # 5 tokens each
    chunks = chunk(" ".join(sents), max_tokens=40, overlap=10)
    assert len(chunks) > 4
    for before, after in itertools.pairwise(chunks):
        shared = before.text[after.char_start - before.char_start :]
        assert after.text.startswith(shared)
        assert 0 < count(shared) <= 10
        assert shared.startswith("Sentence ") and shared.endswith(".")  # whole sentences


def test_no_overlap_when_overlap_is_zero() -> None:
    chunks = chunk(" ".join(f"Sentence {i} is here." for i in range(40)), 40, 0)
    for before, after in itertools.pairwise(chunks):
        assert after.char_start > before.char_end


def test_overlap_takes_trailing_words_of_a_long_previous_sentence() -> None:
    long_sentence = " ".join(f"w{i}" for i in range(30)) + "."
    text = " ".join([long_sentence] * 4)
    chunks = chunk(text, max_tokens=40, overlap=6)
    for before, after in itertools.pairwise(chunks):
        assert after.char_start < before.char_end
        assert 0 < count(text[after.char_start : before.char_end]) <= 6


def test_sentence_longer_than_max_tokens_is_cut_at_words() -> None:
    text = " ".join(f"word{i}" for i in range(100))
    chunks = chunk(text, max_tokens=30, overlap=5)
    assert all(c.token_count <= 30 for c in chunks)
    for c in chunks:
        assert text[c.char_start - 1 : c.char_start].strip() == ""  # starts at a word
    check_chunks(text, chunks, 30)


def test_giant_word_is_sliced_without_breaking_grapheme_clusters() -> None:
    cluster = "👨\u200d👩\u200d👧"  # 5 tokens for the regex counter, one grapheme
    text = "x" + (cluster + "e\u0301" + "!") * 20
    chunks = chunk(text, max_tokens=12, overlap=3)
    check_chunks(text, chunks, 12)
    assert len(chunks) > 1
    for c in chunks[1:]:
        assert text[c.char_start] not in "\u200d\u0301"
        assert text[c.char_start - 1] != "\u200d"


def test_cluster_larger_than_max_tokens_is_cut_at_code_points() -> None:
    text = "a" + "\u0301" * 30  # one grapheme cluster of 31 tokens
    chunks = chunk(text, max_tokens=8, overlap=2)
    check_chunks(text, chunks, 8)


def test_cjk_sentences_without_spaces_are_split() -> None:
    text = "。".join("中文字" * 5 for _ in range(30)) + "。"
    chunks = chunk(text, max_tokens=20, overlap=4)
    check_chunks(text, chunks, 20)
    assert len(chunks) > 3


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (10, 10), (10, -1), (10, 11)])
def test_invalid_limits_are_rejected(max_tokens: int, overlap: int) -> None:
    with pytest.raises(InvalidInputError):
        chunk("text", max_tokens, overlap)


def test_counter_is_called_in_batches() -> None:
    class Recording:
        def __init__(self) -> None:
            self.calls = 0

        def count_tokens(self, texts: Sequence[str]) -> list[int]:
            self.calls += 1
            return COUNTER.count_tokens(texts)

    recording = Recording()
    counter: TokenCounter = recording
    text = document(random.Random(5), 30)
    chunks = chunk_text(text, max_tokens=200, overlap=32, counter=counter)
    assert len(chunks) > 30
    assert recording.calls <= 4  # sentences, long-sentence words, overlap tails (+ a retry)


@pytest.mark.model
def test_real_tokenizer_counts_and_limits() -> None:
    from embedplat.embedders import load_embedder

    counter = load_embedder("all-MiniLM-L6-v2").token_counter()
    rng = random.Random(11)
    text = (
        "Ünïcödé title — 中文 😀\n\n"
        + document(rng, 6)
        + "\n\n"
        + " ".join(["supercalifragilistic"] * 300)
    )
    chunks = chunk_text(text, max_tokens=200, overlap=32, counter=counter)
    assert len(chunks) > 6
    real = counter.count_tokens([c.text for c in chunks])
    for c, n in zip(chunks, real, strict=True):
        assert c.token_count == n <= 200  # WordPiece counts add up exactly at whitespace
        assert c.text == text[c.char_start : c.char_end]
