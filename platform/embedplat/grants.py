"""Per-collection grants: which roles may read (or write) which collections.

Row-level security (migration 0011, ``sql/roles.v1.sql``) lets a role see a collection's rows
(records, chunks, vectors, queue, attachment) only through a grant in
``embedplat.collection_grants`` to that role or to a role it inherits from. The table
privileges come from the shipped group roles (:data:`READER_ROLE`, :data:`WRITER_ROLE`,
:data:`WORKER_ROLE`); :func:`grant` makes the grantee a member of the reader (or writer) role
too, so one call is all a new analyst or app needs. docs/security.md explains the model.

These functions run in the caller's transaction (they do not commit) and need the admin:
the owner of the embedplat tables, or a superuser.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from embedplat.errors import (
    CollectionNotFoundError,
    EmbedplatError,
    InvalidInputError,
    server_message,
)

__all__ = [
    "READER_ROLE",
    "ROLES",
    "WORKER_ROLE",
    "WRITER_ROLE",
    "CollectionGrant",
    "GrantError",
    "grant",
    "list_grants",
    "revoke",
]

Connection = psycopg.Connection[Any]

READER_ROLE = "embedplat_reader"
"""Search and read the collections granted to a member."""
WRITER_ROLE = "embedplat_writer"
"""Also insert, update and delete records of the collections granted with write."""
WORKER_ROLE = "embedplat_worker"
"""Chunk and embed every collection (no DDL, no record inserts or deletes, no grants)."""
ROLES = (READER_ROLE, WRITER_ROLE, WORKER_ROLE)


class GrantError(EmbedplatError):
    """A grant could not be made: no such role, the shipped roles are missing, or the caller
    is not the admin."""


@dataclass(frozen=True, slots=True)
class CollectionGrant:
    """``role`` may read ``collection`` (and write its records when ``write``)."""

    role: str
    collection: str
    write: bool

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "collection": self.collection, "write": self.write}


def grant(conn: Connection, role: str, collection: str, *, write: bool = False) -> CollectionGrant:
    """Let ``role`` read ``collection`` (``write``: also write its records).

    Replaces an earlier grant of the same role and collection (so ``write=False`` takes write
    access back). The role becomes a member of :data:`READER_ROLE` (or :data:`WRITER_ROLE`), whose
    table privileges the grant needs.
    """
    collection_id = _collection_id(conn, collection)
    role_oid = _role_oid(conn, role)
    group = WRITER_ROLE if write else READER_ROLE
    if _role_oid_or_none(conn, group) is None:
        raise GrantError(
            f"role {group} does not exist: the migration could not create it; as a user with "
            "CREATEROLE run `CREATE ROLE " + group + " NOLOGIN` and "
            "`SELECT embedplat.install_roles()` (see docs/security.md)"
        )
    with _as_admin(f"grant {collection!r} to {role!r}"), conn.transaction():
        if role != group:
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role))
            )
        conn.execute(
            "INSERT INTO embedplat.collection_grants (collection_id, role, can_write) "
            "VALUES (%s, %s, %s) ON CONFLICT (collection_id, role) "
            "DO UPDATE SET can_write = EXCLUDED.can_write, granted_at = now()",
            (collection_id, role_oid, write),
        )
    return CollectionGrant(role, collection, write)


def revoke(conn: Connection, role: str, collection: str) -> bool:
    """Take ``role``'s grant on ``collection`` back; whether there was one.

    The role stays a member of the shipped roles (it may hold grants on other collections):
    without a grant, row-level security shows it nothing of the collection.
    """
    collection_id = _collection_id(conn, collection)
    role_oid = _role_oid(conn, role)
    with _as_admin(f"revoke {collection!r} from {role!r}"):
        row = conn.execute(
            "DELETE FROM embedplat.collection_grants WHERE collection_id = %s AND role = %s "
            "RETURNING 1",
            (collection_id, role_oid),
        ).fetchone()
    return row is not None


def list_grants(conn: Connection, collection: str | None = None) -> list[CollectionGrant]:
    """The grants (of one collection, or all), by collection and role. A role dropped since
    its grant is listed by its former oid."""
    rows = conn.execute(
        "SELECT coalesce(r.rolname, g.role::text), c.name, g.can_write "
        "FROM embedplat.collection_grants g "
        "JOIN embedplat.collections c ON c.id = g.collection_id "
        "LEFT JOIN pg_catalog.pg_roles r ON r.oid = g.role "
        "WHERE %(name)s::text IS NULL OR c.name = %(name)s "
        "ORDER BY c.name, 1",
        {"name": collection},
    ).fetchall()
    if collection is not None and not rows:
        _collection_id(conn, collection)  # an unknown collection is an error, not "no grants"
    return [CollectionGrant(str(role), str(name), bool(write)) for role, name, write in rows]


# -- helpers ------------------------------------------------------------------------------------


def _collection_id(conn: Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM embedplat.collections WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise CollectionNotFoundError(
            f"no collection named {name!r}; see `embedplat collection list`"
        )
    return int(row[0])


def _role_oid_or_none(conn: Connection, role: str) -> int | None:
    row = conn.execute("SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone()
    return None if row is None else int(row[0])


def _role_oid(conn: Connection, role: str) -> int:
    if not role or not role.strip():
        raise InvalidInputError("name a role, e.g. analyst")
    oid = _role_oid_or_none(conn, role)
    if oid is None:
        raise GrantError(
            f"no role named {role!r}; create it first (CREATE ROLE ... LOGIN PASSWORD ...)"
        )
    return oid


@contextmanager
def _as_admin(what: str) -> Iterator[None]:
    """Turn a refused privilege into a :class:`GrantError` that says who may grant."""
    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise GrantError(
            f"cannot {what}: {server_message(exc)}; only the admin (the owner of the embedplat "
            "tables, or a superuser) may grant"
        ) from None
