"""Test embedders, registered from the test side: ``test-hash-N`` names a deterministic embedder.

Importing this module registers the provider. pytest loads it as a plugin (``tests/conftest.py``);
a separate process (the CLI run as a subprocess, a Celery worker) gets it through
``EMBEDPLAT_PLUGINS=tests.fix_embedders`` (see :func:`plugin_env`), which
:meth:`embedplat.config.Settings.from_env` imports.

In such a process three variables make every model call observable, for the worker tests:
``EMBEDPLAT_TEST_EMBED_DELAY`` (seconds slept in every call, so a test can kill a worker inside
one), ``EMBEDPLAT_TEST_EMBED_GATE`` (a file: every call waits until it exists, so a test decides
when a call ends) and ``EMBEDPLAT_TEST_EMBED_LOG`` (a file to which every embedded text is
appended after the model returned). Only this module reads them; production code knows nothing
of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from embedplat.chunking import TokenCounter
from embedplat.embedders import Embedder, register_embedder_provider
from embedplat.errors import ModelError

__all__ = [
    "TEST_BACKEND",
    "TEST_MODEL_PREFIX",
    "UNLOADABLE_MODEL",
    "HashEmbedder",
    "ObservedEmbedder",
    "RegexTokenCounter",
    "plugin_env",
    "read_log",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The backend of the tests' new collections of the real model (the ``settings`` fixture, the
#: CLI's and the workers' environments): torch, whose vectors every threshold and pinned figure
#: of the suite was made with, and which needs no export per test home. A test of another
#: backend, or of the measured default, says so (tests/*/test_backends.py).
TEST_BACKEND = "torch"
TEST_MODEL_PREFIX = "test-hash-"
# Accepted where a collection is created (the provider below serves every name with the prefix)
# but fails when loaded (fewer than 2 dimensions): a collection whose every sync fails.
UNLOADABLE_MODEL = f"{TEST_MODEL_PREFIX}1"
EMBED_LOG_VARIABLE = "EMBEDPLAT_TEST_EMBED_LOG"
EMBED_DELAY_VARIABLE = "EMBEDPLAT_TEST_EMBED_DELAY"
EMBED_GATE_VARIABLE = "EMBEDPLAT_TEST_EMBED_GATE"

# A token is a run of word characters or one other non-space character.
_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")


class RegexTokenCounter:
    """Counts runs of word characters and single other non-space characters.

    A cheap, deterministic stand-in for a model tokenizer; like one, its counts add up over
    whitespace-separated pieces.
    """

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """One count per text."""
        findall = _TOKEN.findall
        return [len(findall(text)) for text in texts]


class HashEmbedder:
    """Bag-of-hashed-words vectors, L2-normalised; its name is ``test-hash-{dimensions}``.

    SHA-256 of each lowercase word picks a dimension and a sign, so texts that share words are
    similar and equal texts give equal vectors. No torch needed.

    ``fail_on``: ``embed`` raises :class:`RuntimeError` for a whole call when any text matches
    (as a real model fails a batch), so callers must bisect to find the bad text.
    ``delay_s``: seconds slept on every ``embed`` call.
    """

    def __init__(
        self,
        dimensions: int = 64,
        *,
        fail_on: Callable[[str], bool] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        if dimensions < 2:
            raise ValueError(f"dimensions must be at least 2, got {dimensions}")
        self._dimensions = dimensions
        self.fail_on = fail_on
        self.delay_s = delay_s
        self.calls = 0
        """Number of ``embed`` calls that returned vectors."""
        self.texts_embedded = 0
        """Number of texts those calls embedded."""

    @property
    def name(self) -> str:
        """``test-hash-{dimensions}``."""
        return f"{TEST_MODEL_PREFIX}{self._dimensions}"

    @property
    def dimensions(self) -> int:
        """Vector length."""
        return self._dimensions

    @property
    def normalized(self) -> bool:
        """Always True."""
        return True

    @property
    def fingerprint(self) -> str:
        """Constant per dimension count (the algorithm is the model)."""
        return hashlib.sha256(f"embedplat-hash-embedder-v1:{self._dimensions}".encode()).hexdigest()

    def token_counter(self) -> TokenCounter:
        """A :class:`RegexTokenCounter`."""
        return RegexTokenCounter()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors of shape ``(len(texts), dimensions)``."""
        texts = list(texts)
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        if self.fail_on is not None:
            for text in texts:
                if self.fail_on(text):
                    raise RuntimeError(f"injected embedding failure for {text[:40]!r}")
        out = np.zeros((len(texts), self._dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            vector = out[row]
            for word in _WORD.findall(text.lower()):
                value = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "big")
                vector[value % self._dimensions] += 1.0 if (value >> 63) & 1 else -1.0
            norm = float(np.linalg.norm(vector))
            if norm == 0.0:
                vector[0] = 1.0  # no words: a fixed unit vector keeps the output normalised
            else:
                vector /= norm
        self.calls += 1
        self.texts_embedded += len(texts)
        return out


class ObservedEmbedder:
    """An embedder whose model calls are slow and logged, for tests that kill workers.

    Sleeps ``delay_s`` in every model call, waits until the file ``gate`` exists (when given),
    then appends every text it embedded to ``log_path``
    (one JSON string per line, fsynced) before returning the vectors. A worker killed during the
    sleep has logged nothing for that batch; the logs of all workers together list every text
    the model saw, so a test can prove that no chunk was embedded twice.
    """

    def __init__(
        self, inner: Embedder, log_path: Path | None, delay_s: float, gate: Path | None = None
    ) -> None:
        self._inner = inner
        self._log_path = log_path
        self._delay_s = delay_s
        self._gate = gate

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def dimensions(self) -> int:
        return self._inner.dimensions

    @property
    def normalized(self) -> bool:
        return self._inner.normalized

    @property
    def fingerprint(self) -> str:
        return self._inner.fingerprint

    def token_counter(self) -> TokenCounter:
        return self._inner.token_counter()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._delay_s:
            time.sleep(self._delay_s)
        while self._gate is not None and not self._gate.exists():
            time.sleep(0.05)
        vectors = self._inner.embed(texts)
        if self._log_path is not None:
            with self._log_path.open("a", encoding="utf-8") as fh:
                for text in texts:
                    fh.write(json.dumps(text) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        return vectors


def read_log(log: Path) -> list[str]:
    """The texts an :class:`ObservedEmbedder` logged to ``log``, in order ([] if no file)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]


_TEST_NAME = re.compile(rf"{re.escape(TEST_MODEL_PREFIX)}(\d+)")


def _hash_embedder_for(name: str, *, device: str | None, batch_size: int) -> Embedder:
    match = _TEST_NAME.fullmatch(name)
    if match is None or int(match.group(1)) < 2:
        raise ModelError(
            f"unknown test model {name!r}: use {TEST_MODEL_PREFIX}N with N >= 2 dimensions"
        )
    embedder = HashEmbedder(int(match.group(1)))
    # Read per embedder, not at import: the variables belong to the process being observed.
    log = os.environ.get(EMBED_LOG_VARIABLE)
    delay = float(os.environ.get(EMBED_DELAY_VARIABLE) or 0)
    gate = os.environ.get(EMBED_GATE_VARIABLE)
    if log or delay or gate:
        return ObservedEmbedder(
            embedder, Path(log) if log else None, delay, Path(gate) if gate else None
        )
    return embedder


def plugin_env() -> dict[str, str]:
    """What a subprocess's environment needs to find this plugin (from any working folder)."""
    path = os.environ.get("PYTHONPATH")
    return {
        "EMBEDPLAT_PLUGINS": __name__,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *([path] if path else [])]),
    }


# Any name with the prefix is ours, so a malformed one gets the message above, not a model hub
# lookup by sentence-transformers.
HASH_PROVIDER = register_embedder_provider(
    lambda name: name.startswith(TEST_MODEL_PREFIX), _hash_embedder_for
)
