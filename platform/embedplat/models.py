"""The model registry: every model the platform knows, and local folders registered by name.

A name registered with :func:`add_model` (``embedplat model add NAME --path FOLDER``) is a row
of ``embedplat.registered_models``: the folder's absolute path, its fingerprint and what its
config files say (dimensions, maximum sequence length, Normalize module, prompts). Every
process that embeds reads the row before it loads the model (each lookup of a collection
brings its model's registration along, see :mod:`embedplat.embedders.registry`), so the CLI,
``Platform`` and every worker resolve the name to the same folder, and each refuses to embed
when its copy of the folder hashes differently from the registered fingerprint.

:func:`list_models` describes every model the platform knows: the bundled all-MiniLM-L6-v2,
all-mpnet-base-v2 when its parts are installed, the registered names, and every name a
collection is configured with or ``embedplat.embedding_models`` holds vectors of; with where
it loads from, its fingerprint, and which collections use it. Nothing is loaded for that (the
facts come from config files); :func:`check_models` loads each model to be sure.

:func:`require_model` is the one check that a model name can be used here, for creating a
collection (and, later, switching one to another model).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from embedplat.config import DEFAULT_MODEL
from embedplat.embedders import Embedder, ModelSource, locate_model, mpnet, provider_for
from embedplat.embedders.backends import DEFAULT_BACKEND, SEPARATOR, model_variant
from embedplat.embedders.exports import variant_fingerprint
from embedplat.embedders.locate import _looks_like_path
from embedplat.embedders.registry import (
    ModelFacts,
    ModelUnavailableError,
    RegisteredModel,
    read_model_facts,
    registration_mismatch,
    remember_registration,
)
from embedplat.embedders.sentence_transformers import BUNDLED_NAMES, fingerprint_folder
from embedplat.errors import InvalidInputError, ModelMismatchError, PermissionDeniedError

__all__ = [
    "REGISTRATION_COLUMNS",
    "AddOutcome",
    "ModelAdded",
    "ModelInfo",
    "ModelRegistrationError",
    "ModelUse",
    "add_model",
    "check_models",
    "list_models",
    "read_registration",
    "registration_from_row",
    "remove_model",
    "require_model",
    "validate_model_name",
]

Connection = psycopg.Connection[Any]
AddOutcome = Literal["added", "replaced", "unchanged"]

MAX_MODEL_NAME_LENGTH = 200
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

# The columns of embedplat.registered_models that make a RegisteredModel, in the order of
# registration_from_row; other modules select them with a prefix (collections.py joins them).
REGISTRATION_COLUMNS = (
    "name",
    "path",
    "fingerprint",
    "dimensions",
    "max_seq_length",
    "normalize_module",
    "distance",
    "prompts",
    "default_prompt_name",
)
_SELECT_REGISTRATION = f"SELECT {', '.join(REGISTRATION_COLUMNS)} FROM embedplat.registered_models"


class ModelRegistrationError(InvalidInputError):
    """``model add`` or ``model remove`` refused: the name is taken or reserved, the folder is
    not a model, or collections depend on the registration."""


@dataclass(frozen=True, slots=True)
class ModelUse:
    """One collection's use of a model: configured with its name, and/or holding its vectors."""

    collection: str
    configured: bool
    """The collection's model name is this model (new vectors are computed with it)."""
    active: bool
    """The collection's searches use vectors of this model."""
    fingerprint: str | None
    """The fingerprint of the active vectors (None when not active)."""
    matches: bool | None
    """Whether those vectors are of the files here (None: unknown, or not active)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "configured": self.configured,
            "active": self.active,
            "fingerprint": self.fingerprint,
            "matches": self.matches,
        }


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the platform knows about one model name (a row of `embedplat model list`)."""

    name: str
    backend: str
    """The runtime that computes its vectors (``torch``, or the backend ``NAME@BACKEND``
    names: :mod:`embedplat.embedders.backends`)."""
    source: str | None
    """``bundled``, ``extra``, ``registered``, ``folder``, ``cache``, ``hub``, ``provider``,
    or None when the name resolves nowhere here."""
    location: str | None
    registered: bool
    fingerprint: str | None
    """Of the files here (registered: the registered one); None when unknown without loading."""
    dimensions: int | None
    max_seq_length: int | None
    normalized: bool | None
    """Whether embedplat's vectors of it have unit length (every sentence-transformers model:
    embedplat normalises)."""
    model_normalizes: bool | None
    """Whether the model ends in its own Normalize module (modules.json)."""
    distance: str | None
    prompts: Mapping[str, str]
    default_prompt_name: str | None
    loads: bool
    """Without a check: the name resolves here and a registered folder hashes as registered;
    after :func:`check_models`: the model loaded."""
    problem: str | None
    checked: bool
    stored_fingerprints: tuple[str, ...] = ()
    """Fingerprints embedplat.embedding_models holds vectors of under this name."""
    collections: tuple[ModelUse, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape of `embedplat model list --json`)."""
        return {
            "name": self.name,
            "backend": self.backend,
            "source": self.source,
            "location": self.location,
            "registered": self.registered,
            "fingerprint": self.fingerprint,
            "dimensions": self.dimensions,
            "max_seq_length": self.max_seq_length,
            "normalized": self.normalized,
            "model_normalizes": self.model_normalizes,
            "distance": self.distance,
            "prompts": dict(self.prompts),
            "default_prompt_name": self.default_prompt_name,
            "loads": self.loads,
            "problem": self.problem,
            "checked": self.checked,
            "stored_fingerprints": list(self.stored_fingerprints),
            "collections": [use.to_json() for use in self.collections],
        }


@dataclass(frozen=True, slots=True)
class ModelAdded:
    """What `model add` did: the registration, and whether it was new, replaced or the same."""

    registration: RegisteredModel
    outcome: AddOutcome

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape of `embedplat model add --json`)."""
        return {**self.registration.to_json(), "outcome": self.outcome}


# -- reading registrations --------------------------------------------------------------------


def registration_from_row(row: Mapping[str, Any], prefix: str = "") -> RegisteredModel | None:
    """The registration in ``row`` (its :data:`REGISTRATION_COLUMNS`, each name after
    ``prefix``), or None when the row has none (a LEFT JOIN that found nothing)."""
    if row.get(f"{prefix}name") is None:
        return None
    prompts = row.get(f"{prefix}prompts") or {}
    if isinstance(prompts, str):
        prompts = json.loads(prompts)
    return RegisteredModel(
        name=str(row[f"{prefix}name"]),
        path=str(row[f"{prefix}path"]),
        fingerprint=str(row[f"{prefix}fingerprint"]),
        dimensions=int(row[f"{prefix}dimensions"]),
        max_seq_length=row.get(f"{prefix}max_seq_length"),
        normalize_module=bool(row.get(f"{prefix}normalize_module")),
        distance=str(row.get(f"{prefix}distance") or "cosine"),
        prompts={str(k): str(v) for k, v in dict(prompts).items()},
        default_prompt_name=row.get(f"{prefix}default_prompt_name"),
    )


def read_registration(conn: Connection, name: str) -> RegisteredModel | None:
    """The registration of ``name`` in the database (None: not registered); this process's
    loader learns it too (see :mod:`embedplat.embedders.registry`)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SELECT_REGISTRATION + " WHERE name = %s", (name,)).fetchone()
    registered = registration_from_row(row) if row is not None else None
    remember_registration(name, registered)
    return registered


def require_model(conn: Connection, name: str) -> ModelSource:
    """Where ``name`` loads from here, or :class:`~embedplat.embedders.ModelUnavailableError`
    (:class:`~embedplat.errors.ModelMismatchError` for a registered folder whose files here
    are not the registered ones). Loads nothing; a registered folder is hashed (once per
    process). The check for creating a collection, and for switching one to a model.
    """
    if not name.strip():
        raise ModelUnavailableError("the embedding model name is empty; name a model")
    # A backend variant (NAME@onnx) is registered as NAME.
    registered = read_registration(conn, model_variant(name).base)
    source = locate_model(name)
    if source.kind == "registered" and registered is not None:
        found = fingerprint_folder(registered.path)
        if found is None:
            raise ModelUnavailableError(
                f"model {name!r} is registered for the folder {registered.path!r}, which holds "
                "no model weights here (model.safetensors or pytorch_model.bin)"
            )
        if found != registered.fingerprint:
            raise ModelMismatchError(registration_mismatch(registered, found))
    return source


# -- registering --------------------------------------------------------------------------------


def validate_model_name(name: str) -> str:
    """A name a folder may be registered under: printable text that is not a path, not a name
    embedplat resolves itself (the bundled and extra models) and not served by a provider."""
    if not isinstance(name, str) or not name.strip():
        raise ModelRegistrationError("a model name must be a non-empty string")
    if len(name) > MAX_MODEL_NAME_LENGTH:
        raise ModelRegistrationError(
            f"a model name may have at most {MAX_MODEL_NAME_LENGTH} characters"
        )
    for char in name:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES or char.isspace():
            raise ModelRegistrationError(
                f"a model name may not contain the character U+{ord(char):04X} "
                f"({unicodedata.name(char, 'control, format or space character')}); use "
                "letters, digits and . _ - (and one / as in org/model)"
            )
    if _looks_like_path(name) or "\\" in name or name.endswith("/"):
        raise ModelRegistrationError(
            f"the model name {name!r} looks like a path; register the folder under a plain "
            "name such as my-model or org/my-model"
        )
    if SEPARATOR in name:
        raise ModelRegistrationError(
            f"a model name may not contain {SEPARATOR!r} ({name!r}): NAME@BACKEND names a backend "
            "variant of model NAME (docs/models.md); register the folder under a plain name"
        )
    if name in BUNDLED_NAMES or mpnet.split_model_for(name) is not None:
        raise ModelRegistrationError(
            f"the model name {name!r} is embedplat's own ({_own_source(name)}); register the "
            "folder under another name"
        )
    if provider_for(name) is not None:
        raise ModelRegistrationError(
            f"the model name {name!r} is served by a registered embedder provider in this "
            "process; register the folder under another name"
        )
    return name


def _own_source(name: str) -> str:
    if name in BUNDLED_NAMES:
        return "the bundled all-MiniLM-L6-v2"
    return "all-mpnet-base-v2, assembled from its part packages"


def add_model(conn: Connection, name: str, path: str, *, replace: bool = False) -> ModelAdded:
    """Register the model folder ``path`` under ``name`` (one transaction).

    The folder must hold a sentence-transformers (modules.json) or transformers (config.json)
    model with weights whose dimensions its config files state. Refused: a reserved name (see
    :func:`validate_model_name`), a name registered for other files (unless ``replace``), and,
    even with ``replace``, any change while a collection holds vectors of the name under
    another fingerprint. Registering the same folder and files again changes nothing.
    """
    validate_model_name(name)
    registered = _describe_folder(name, path)
    with conn.transaction():
        # Registrations take turns: the check of dependent collections below and the write
        # must see the same registry.
        try:
            conn.execute("LOCK TABLE embedplat.registered_models IN SHARE ROW EXCLUSIVE MODE")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise _not_owner("register a model") from exc
        current = read_registration(conn, name)
        if current is not None and (current.path, current.fingerprint) == (
            registered.path,
            registered.fingerprint,
        ):
            return ModelAdded(current, "unchanged")
        if current is not None and not replace:
            raise ModelRegistrationError(
                f"the model name {name!r} is registered already, for the folder "
                f"{current.path!r} (fingerprint {current.fingerprint[:12]}); pick another "
                f"name, or give --replace to register {registered.path!r} under it"
            )
        dependent = _collections_with_other_vectors(conn, name, registered.fingerprint)
        if dependent:
            raise ModelRegistrationError(
                f"collection(s) {', '.join(repr(c) for c in dependent)} hold vectors of model "
                f"{name!r} with another fingerprint than {registered.fingerprint[:12]} (the "
                f"files of {registered.path!r}); registering them under {name!r} would make "
                "those collections fail: register the folder under a new name"
            )
        _write_registration(conn, registered)
    remember_registration(name, registered)
    return ModelAdded(registered, "replaced" if current is not None else "added")


def _describe_folder(name: str, path: str) -> RegisteredModel:
    """The registration of the model folder ``path``: its facts and fingerprint."""
    try:
        folder = Path(path).expanduser()
    except RuntimeError:  # "~user" of an unknown user
        folder = Path(path)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ModelRegistrationError(
            f"--path {path!r} {what}; give the folder a sentence-transformers model was saved "
            "to (it holds modules.json)"
        )
    resolved = folder.resolve()
    try:
        locate_model(str(resolved))  # a model folder, and the libraries to run it are here
    except ModelUnavailableError as exc:
        raise ModelRegistrationError(str(exc)) from exc
    fingerprint = fingerprint_folder(str(resolved))
    if fingerprint is None:
        raise ModelRegistrationError(
            f"the folder {str(resolved)!r} has no model weights (model.safetensors or "
            "pytorch_model.bin), so it is not a complete model"
        )
    facts = read_model_facts(resolved)
    if facts.dimensions is None:
        raise ModelRegistrationError(
            f"the folder {str(resolved)!r} does not state its vector size (no Pooling module "
            "config with word_embedding_dimension, no config.json hidden_size), so it is not a "
            "model embedplat can register"
        )
    return RegisteredModel(
        name=name,
        path=str(resolved),
        fingerprint=fingerprint,
        dimensions=facts.dimensions,
        max_seq_length=facts.max_seq_length,
        normalize_module=bool(facts.normalize_module),
        prompts=dict(facts.prompts),
        default_prompt_name=facts.default_prompt_name,
    )


def _collections_with_other_vectors(conn: Connection, name: str, fingerprint: str) -> list[str]:
    rows = conn.execute(
        "SELECT DISTINCT c.name FROM embedplat.collections c "
        "JOIN embedplat.embedding_models m ON m.id IN (c.active_model_id, c.backfill_model_id) "
        "WHERE m.name = %s AND m.fingerprint <> %s ORDER BY c.name",
        (name, fingerprint),
    ).fetchall()
    return [str(row[0]) for row in rows]


def _write_registration(conn: Connection, registered: RegisteredModel) -> None:
    try:
        conn.execute(
            "INSERT INTO embedplat.registered_models (name, path, fingerprint, dimensions, "
            "max_seq_length, normalize_module, distance, prompts, default_prompt_name) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s) "
            "ON CONFLICT (name) DO UPDATE SET path = EXCLUDED.path, "
            "fingerprint = EXCLUDED.fingerprint, dimensions = EXCLUDED.dimensions, "
            "max_seq_length = EXCLUDED.max_seq_length, "
            "normalize_module = EXCLUDED.normalize_module, distance = EXCLUDED.distance, "
            "prompts = EXCLUDED.prompts, default_prompt_name = EXCLUDED.default_prompt_name, "
            "updated_at = now()",
            (
                registered.name,
                registered.path,
                registered.fingerprint,
                registered.dimensions,
                registered.max_seq_length,
                registered.normalize_module,
                registered.distance,
                json.dumps(dict(registered.prompts)),
                registered.default_prompt_name,
            ),
        )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _not_owner("register a model") from exc


def remove_model(conn: Connection, name: str) -> bool:
    """Forget the registration of ``name``; False when it was not registered.

    Refused while a collection is configured with the name or holds vectors of it: those
    would no longer resolve.
    """
    with conn.transaction():
        try:
            conn.execute("LOCK TABLE embedplat.registered_models IN SHARE ROW EXCLUSIVE MODE")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise _not_owner("remove a model registration") from exc
        users = conn.execute(
            "SELECT DISTINCT c.name FROM embedplat.collections c "
            "LEFT JOIN embedplat.embedding_models m "
            "ON m.id IN (c.active_model_id, c.backfill_model_id) "
            "WHERE c.model_name = %(name)s OR m.name = %(name)s ORDER BY c.name",
            {"name": name},
        ).fetchall()
        if users:
            raise ModelRegistrationError(
                f"model {name!r} is used by collection(s) "
                f"{', '.join(repr(str(row[0])) for row in users)}; drop them (or, once model "
                "switches exist, switch them to another model) before removing it"
            )
        deleted = conn.execute(
            "DELETE FROM embedplat.registered_models WHERE name = %s RETURNING name", (name,)
        ).fetchone()
    remember_registration(name, None)
    return deleted is not None


def _not_owner(action: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"this role may not {action}: the registry (embedplat.registered_models) is written "
        "by the schema's owner only, the role that ran `embedplat init`"
    )


# -- listing ------------------------------------------------------------------------------------


@dataclass
class _Known:
    """What the database says about one name, gathered before it is described."""

    registered: RegisteredModel | None = None
    uses: dict[str, dict[str, Any]] = field(default_factory=dict)
    stored: list[dict[str, Any]] = field(default_factory=list)


def list_models(conn: Connection) -> list[ModelInfo]:
    """Every model the platform knows (see the module docstring), described without loading:
    the default model first, then all-mpnet-base-v2 when installed, then the others by name."""
    known: dict[str, _Known] = {DEFAULT_MODEL: _Known()}
    if mpnet.is_extracted(mpnet.MPNET, mpnet.cache_root()) or mpnet.any_part_installed(mpnet.MPNET):
        known[mpnet.MPNET.name] = _Known()
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(_SELECT_REGISTRATION + " ORDER BY name"):
            registered = registration_from_row(row)
            assert registered is not None
            known.setdefault(registered.name, _Known()).registered = registered
        for row in cur.execute(
            "SELECT name, fingerprint, dimensions, normalized, distance "
            "FROM embedplat.embedding_models ORDER BY id"
        ):
            known.setdefault(row["name"], _Known()).stored.append(row)
        for row in cur.execute(
            "SELECT c.name AS collection, c.model_name, m.name AS active_name, "
            "m.fingerprint AS active_fingerprint FROM embedplat.collections c "
            "LEFT JOIN embedplat.embedding_models m ON m.id = c.active_model_id ORDER BY c.name"
        ):
            configured = known.setdefault(row["model_name"], _Known())
            configured.uses.setdefault(row["collection"], {"configured": False, "fp": None})
            configured.uses[row["collection"]]["configured"] = True
            if row["active_name"] is not None:
                active = known.setdefault(row["active_name"], _Known())
                use = active.uses.setdefault(row["collection"], {"configured": False, "fp": None})
                use["fp"] = row["active_fingerprint"]
    # Every registration is known to this process's loader, so locate_model sees them all.
    for name, entry in known.items():
        remember_registration(name, entry.registered)
    first = [n for n in (DEFAULT_MODEL, mpnet.MPNET.name) if n in known]
    names = first + sorted(n for n in known if n not in first)
    out = []
    for name in names:
        base = known.get(model_variant(name).base)
        out.append(_describe(name, known[name], base.registered if base is not None else None))
    return out


def _describe(name: str, known: _Known, base_registration: RegisteredModel | None) -> ModelInfo:
    """One model name; ``base_registration``: the registration of the model a backend
    variant runs (``NAME`` of ``NAME@onnx``), which is the variant's own for torch."""
    source: ModelSource | None = None
    problem: str | None = None
    try:
        source = locate_model(name)
    except ModelUnavailableError as exc:
        problem = str(exc)
    facts = ModelFacts()
    fingerprint: str | None = None
    variant = model_variant(name)
    registered = known.registered or base_registration
    kind = source.kind if source is not None else None
    if registered is not None:
        facts = ModelFacts(
            registered.dimensions,
            registered.max_seq_length,
            registered.normalize_module,
            registered.prompts,
            registered.default_prompt_name,
        )
        fingerprint = registered.fingerprint
        if kind == "registered":
            found = fingerprint_folder(registered.path)
            if found is None:
                problem = f"the registered folder {registered.path!r} holds no model weights here"
            elif found != registered.fingerprint:
                problem = registration_mismatch(registered, found)
    elif source is not None and kind in ("bundled", "folder") and source.location:
        facts = read_model_facts(source.location)
        fingerprint = fingerprint_folder(source.location)
    elif kind == "extra":
        split = mpnet.split_model_for(name)
        if split is not None:
            try:
                facts = mpnet.read_facts(split)
            except ModelUnavailableError as exc:
                problem = str(exc)
            fingerprint = split.fingerprint
    if fingerprint is not None and variant.backend != DEFAULT_BACKEND:
        fingerprint = variant_fingerprint(fingerprint, variant.backend)
    latest = known.stored[-1] if known.stored else None
    sentence_transformers = kind in ("registered", "bundled", "extra", "folder", "cache", "hub")
    normalized: bool | None
    if latest is not None:
        normalized = bool(latest["normalized"])
    else:
        normalized = True if sentence_transformers else None
    distance: str | None
    if latest is not None:
        distance = str(latest["distance"])
    else:
        distance = "cosine" if sentence_transformers else None
    dimensions = facts.dimensions
    if dimensions is None and latest is not None:
        dimensions = int(latest["dimensions"])
    return ModelInfo(
        name=name,
        backend=variant.backend,
        source=kind,
        location=source.location if source is not None else None,
        registered=registered is not None,
        fingerprint=fingerprint,
        dimensions=dimensions,
        max_seq_length=facts.max_seq_length,
        normalized=normalized,
        model_normalizes=facts.normalize_module,
        distance=distance,
        prompts=dict(facts.prompts),
        default_prompt_name=facts.default_prompt_name,
        loads=problem is None,
        problem=problem,
        checked=False,
        stored_fingerprints=tuple(dict.fromkeys(str(r["fingerprint"]) for r in known.stored)),
        collections=_uses(known.uses, fingerprint),
    )


def _uses(uses: Mapping[str, Mapping[str, Any]], fingerprint: str | None) -> tuple[ModelUse, ...]:
    out = []
    for collection in sorted(uses):
        use = uses[collection]
        active_fp = use["fp"]
        matches = None if active_fp is None or fingerprint is None else active_fp == fingerprint
        out.append(
            ModelUse(
                collection=collection,
                configured=bool(use["configured"]),
                active=active_fp is not None,
                fingerprint=active_fp,
                matches=matches,
            )
        )
    return tuple(out)


def check_models(infos: Iterable[ModelInfo], load: Callable[[str], Embedder]) -> list[ModelInfo]:
    """``infos`` after loading each model with ``load`` (e.g. ``Platform.embedder``): the
    loaded model's dimensions, fingerprint and normalisation, or why it did not load."""
    checked: list[ModelInfo] = []
    for info in infos:
        try:
            embedder = load(info.name)
            dimensions, fingerprint = embedder.dimensions, embedder.fingerprint
            normalized = embedder.normalized
        except Exception as exc:  # a provider's factory may raise anything: report it
            checked.append(replace(info, loads=False, problem=_one_line(exc), checked=True))
            continue
        uses = tuple(
            replace(u, matches=u.fingerprint == fingerprint) if u.active else u
            for u in info.collections
        )
        checked.append(
            replace(
                info,
                loads=True,
                problem=None,
                checked=True,
                dimensions=dimensions,
                fingerprint=fingerprint,
                normalized=normalized,
                collections=uses,
            )
        )
    return checked


def _one_line(exc: BaseException) -> str:
    from embedplat.errors import EmbedplatError

    text = str(exc) if isinstance(exc, EmbedplatError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())
