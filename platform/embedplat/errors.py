"""One error hierarchy. Every message says what was wrong and what to do about it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InputProblem:
    """One rejected input row: where it came from and why it was rejected."""

    source: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.reason}"


class EmbedplatError(Exception):
    """Base class of every error embedplat raises on purpose."""


class ConfigurationError(EmbedplatError):
    """A setting is missing or malformed."""


class DatabaseUnavailableError(EmbedplatError):
    """The database cannot be reached, refused the login, or lacks pgvector."""


class SchemaNotReadyError(EmbedplatError):
    """The database has not been initialised (run `embedplat init`)."""


class EmbeddedServerError(EmbedplatError):
    """The embedded PostgreSQL server could not be started or stopped."""


class CollectionNotFoundError(EmbedplatError):
    """A collection named by the caller does not exist."""


class RecordNotFoundError(EmbedplatError):
    """A record named by the caller (collection + external id) does not exist."""


class CollectionBusyError(EmbedplatError):
    """A collection could not be changed because other transactions held its locks too long."""


class CollectionExistsError(EmbedplatError):
    """A collection with that name already exists."""


class InvalidInputError(EmbedplatError):
    """Input records or arguments are malformed."""


class IngestError(InvalidInputError):
    """Rejected input rows; carries the list of problems (file, line, reason)."""

    def __init__(self, message: str, problems: list[InputProblem] | None = None) -> None:
        super().__init__(message)
        self.problems: list[InputProblem] = list(problems or [])


class ModelError(EmbedplatError):
    """The embedding model cannot be loaded or is not the one the vectors came from."""


class ModelMismatchError(ModelError):
    """A vector from one model was used against another model's vectors."""


class FilterError(InvalidInputError):
    """A metadata filter does not follow the filter language."""


class PermissionDeniedError(EmbedplatError):
    """The connected role may not do this: it lacks the privilege (it is not a member of the
    right embedplat role) or, for a write, a grant with write on the collection."""


# -- server errors ------------------------------------------------------------------------------

# What embedplat's SQL functions raise (docs/sql.md), by SQLSTATE, as the error to raise in
# Python. 22023 (invalid_parameter_value) is a FilterError when the message says so.
SQLSTATE_ERRORS: dict[str, type[EmbedplatError]] = {
    "42704": CollectionNotFoundError,  # undefined_object: unknown collection
    "P0002": RecordNotFoundError,  # no_data_found: unknown record
    "22023": InvalidInputError,  # invalid_parameter_value: an argument out of range
    "22004": InvalidInputError,  # null_value_not_allowed: a missing argument
    "55000": InvalidInputError,  # object_not_in_prerequisite_state: nothing embedded yet
    "22000": ModelMismatchError,  # data_exception: a query vector of another model or dimension
    "42501": PermissionDeniedError,  # insufficient_privilege: a role or grant is missing
}

_PERMISSION_HINT = (
    "; the connected role lacks that privilege or a grant (see docs/security.md: "
    "`embedplat grant ROLE COLLECTION [--write]`)"
)

_FILTER_MESSAGE_PREFIX = "embedplat filter"


def server_message(exc: BaseException) -> str:
    """The primary message the server sent with ``exc`` (a psycopg error), else ``str(exc)``."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return str(primary) if primary else str(exc)


def from_server_error(exc: BaseException) -> EmbedplatError | None:
    """The embedplat error for a server error raised by embedplat's SQL functions, or None
    when its SQLSTATE is not one of :data:`SQLSTATE_ERRORS`."""
    sqlstate = getattr(exc, "sqlstate", None)
    kind = SQLSTATE_ERRORS.get(sqlstate) if isinstance(sqlstate, str) else None
    if kind is None:
        return None
    message = server_message(exc)
    if kind is InvalidInputError and message.startswith(_FILTER_MESSAGE_PREFIX):
        kind = FilterError
    if kind is PermissionDeniedError:
        message += _PERMISSION_HINT
    return kind(message)


@contextmanager
def server_errors() -> Iterator[None]:
    """Turn the server errors of :data:`SQLSTATE_ERRORS` raised inside into embedplat errors
    (the connection is left as the failed statement left it: roll back before reusing it)."""
    import psycopg  # here, not at import time: this module is imported everywhere

    try:
        yield
    except psycopg.Error as exc:
        error = from_server_error(exc)
        if error is None:
            raise
        raise error from None
