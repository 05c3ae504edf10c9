"""Chunking work grows about linearly with the record, measured without clocks.

Two counts stand for the work: lines of ``embedplat.chunking`` executed (``sys.settrace``) and
characters handed to the token counter. Both are deterministic. Each is taken at k and 4k
units of the same shape of text: linear work gives a ratio near 4, n log n a little more,
and quadratic work (a scan of every boundary for every cut, a bisection over the rest of a
giant word) gives 13-16 for these shapes, so the bound below (5) catches a return to it.
Time per size is measured in ``benchmarks/bench_chunking.py``.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import pytest
from tests.fix_embedders import RegexTokenCounter

import embedplat.chunking as chunking
from embedplat.chunking import TokenCounter, chunk_text

# Work at 4k units over work at k units: linear is 4, quadratic 16.
MAX_RATIO = 5.0


class CountingCounter:
    """Wraps a counter; counts the calls and the characters it is given."""

    def __init__(self, inner: TokenCounter) -> None:
        self.inner = inner
        self.calls = 0
        self.chars = 0

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self.calls += 1
        self.chars += sum(len(t) for t in texts)
        return self.inner.count_tokens(texts)


def lines_executed(fn: Callable[[], object]) -> int:
    """Lines of the chunking module that ``fn()`` executes (other files are not traced)."""
    executed = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal executed
        if event == "line":
            executed += 1
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == chunking.__file__ else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        fn()
    finally:
        sys.settrace(previous)
    return executed


WORDS = [
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
]


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 28))).capitalize() + "."


def paragraph(k: int) -> str:
    rng = random.Random(k)
    return " ".join(sentence(rng) for _ in range(k))


def paragraphs(k: int) -> str:
    rng = random.Random(k)
    out: list[str] = []
    while k > 0:
        n = min(k, rng.randint(2, 14))
        out.append(" ".join(sentence(rng) for _ in range(n)))
        k -= n
    return "\n\n".join(out)


def repeated_sentence(k: int) -> str:
    # Equal sentences have equal cut hashes: ties, which a scan resolves to the first boundary.
    return " ".join(["The same sentence is said again here."] * k)


def one_long_sentence(k: int) -> str:
    # No sentence ends: cut at words, of which there are only three distinct ones.
    return " ".join(("alpha", "beta", "gamma")[i % 3] for i in range(6 * k))


def giant_word(k: int) -> str:
    # One "word" of many tokens (a base64-like blob): cut into slices by counting candidates.
    rng = random.Random(k)
    return "".join(rng.choice("abcdefgh+/=0123") for _ in range(40 * k))


SHAPES = {
    "paragraph": paragraph,
    "paragraphs": paragraphs,
    "repeated_sentence": repeated_sentence,
    "one_long_sentence": one_long_sentence,
    "giant_word": giant_word,
}


def work(text: str, counter: TokenCounter) -> tuple[int, int]:
    counting = CountingCounter(counter)
    lines = lines_executed(lambda: chunk_text(text, max_tokens=200, overlap=32, counter=counting))
    return lines, counting.chars


@pytest.mark.parametrize("shape", SHAPES)
def test_work_grows_linearly_with_the_record(shape: str) -> None:
    make = SHAPES[shape]
    small, large = make(150), make(600)
    assert 3.5 < len(large) / len(small) < 4.5
    small_lines, small_chars = work(small, RegexTokenCounter())
    large_lines, large_chars = work(large, RegexTokenCounter())
    assert large_lines / small_lines <= MAX_RATIO, (small_lines, large_lines)
    assert large_chars / small_chars <= MAX_RATIO, (small_chars, large_chars)


@pytest.mark.model
@pytest.mark.parametrize("shape", SHAPES)
def test_model_tokenizer_is_given_linearly_many_characters(shape: str) -> None:
    # The real tokenizer's counts do not always grow with the length of a slice (WordPiece
    # turns a run of more than 100 letters into one [UNK]); the slice search must stay linear.
    from embedplat.embedders import load_embedder

    counter = load_embedder("all-MiniLM-L6-v2").token_counter()
    make = SHAPES[shape]
    small, large = CountingCounter(counter), CountingCounter(counter)
    chunk_text(make(150), max_tokens=200, overlap=32, counter=small)
    chunk_text(make(600), max_tokens=200, overlap=32, counter=large)
    assert large.chars / small.chars <= MAX_RATIO, (small.chars, large.chars)


# A quadratic pattern needs hours for these runs; linear ones take well under a second. The
# regex engine's work cannot be counted, so the timeout is a watchdog, not a measurement.
RUNS = {
    "spaces": "a" + " " * 400_000 + "b",
    "tabs_then_separator": ("x" + "\t" * 100_000) * 4 + "\u2029y",
    "dots": "Leader" + "." * 400_000 + "x",
    "dots_then_closers": "Wait" + "." * 2_000 + ")" * 200_000 + " next.",
    "spaces_before_lines": ("word" + " " * 2_000 + "\n") * 200,
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", RUNS)
def test_long_runs_of_spaces_and_dots_are_split_in_linear_time(name: str) -> None:
    text = RUNS[name]
    paragraphs = chunking._pieces(text, 0, len(text), chunking._PARAGRAPH_BREAK)
    sentences = [s for start, end in paragraphs for s in chunking._sentences(text, start, end)]
    # The same pieces a plain split gives (every piece trimmed, whitespace dropped).
    words = [w for s, e in sentences for w in text[s:e].split()]
    assert words == text.split()
    if name == "tabs_then_separator":
        assert [text[s:e][-1] for s, e in paragraphs] == ["x", "y"]
    if name == "spaces_before_lines":
        assert len(sentences) == 200  # each line break ends a sentence
    counter = RegexTokenCounter()
    chunks = chunk_text(text, max_tokens=200, overlap=32, counter=counter)
    assert all(c.text == text[c.char_start : c.char_end] for c in chunks)
    assert all(c.token_count <= 200 for c in chunks)
    assert sum(c.token_count for c in chunks) >= counter.count_tokens([text])[0]
