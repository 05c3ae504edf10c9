"""One error hierarchy. Every message says what was wrong and what to do about it."""

from __future__ import annotations

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
