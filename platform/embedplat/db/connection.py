"""Where the database is, and how to talk to it.

``resolve_database_url`` is the single place that decides between ``EMBEDPLAT_DATABASE_URL``
and the embedded server. ``check_database`` turns the usual failures (unreachable, bad login,
no pgvector) into one clear :class:`DatabaseUnavailableError`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from embedplat.config import Settings
from embedplat.errors import DatabaseUnavailableError

if TYPE_CHECKING:
    from sqlalchemy import Engine

MIN_SERVER_VERSION = 150000
MIN_PGVECTOR = (0, 8)


def resolve_database_url(settings: Settings, *, start_embedded: bool = True) -> str:
    """Return the configured URL, or start (or reuse) the embedded server and return its URL."""
    if settings.database_url:
        return settings.database_url
    from embedplat.db.embedded import EmbeddedServer

    server = EmbeddedServer(settings.home)
    if start_embedded:
        return server.start()
    url = server.url()
    if url is None:
        raise DatabaseUnavailableError(
            "the embedded database is not running; start it with `embedplat db start`"
        )
    return url


def libpq_url(url: str) -> str:
    """A URL psycopg/psql accept (strip SQLAlchemy's ``+driver`` suffix)."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)


def sqlalchemy_url(url: str) -> str:
    """The same URL with the psycopg 3 driver named, for SQLAlchemy."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql+psycopg://", url)


# Connection parameters whose values are secrets: never shown in a message or a log line.
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
UNPARSEABLE = "(a connection string libpq cannot parse, not shown: it may hold a password)"
_MASK = "***"
# Parameters a URL carries outside its query string.
_URI_PARTS = frozenset({"user", "password", "host", "port", "dbname"})


def redact(url: str) -> str:
    """``url`` (a URL or a ``key=value`` string) with every secret replaced, for messages.

    The string is parsed as libpq parses it (psycopg's ``conninfo_to_dict``) and written back
    from the parsed parameters, so a password is masked wherever it was given: in the URL's
    user part (percent-encoded or not), as ``?password=``, as ``password=...``. A string that
    libpq cannot parse is not shown at all: what it holds is unknown.
    """
    text = libpq_url(url)
    try:
        params = conninfo_to_dict(text)
    except psycopg.ProgrammingError:
        return UNPARSEABLE
    # An unencoded '@' in a URL's password leaves its tail in libpq's host name: hide that too.
    hidden = _host_prefixes(params)
    if hidden:
        params["host"] = ",".join(_without_prefix(h) for h in str(params["host"]).split(","))
        params["password"] = _MASK
    shown = {k: (_MASK if k in SECRET_PARAMETERS else str(v)) for k, v in params.items()}
    return _as_uri(shown) if _is_uri(text) else make_conninfo(**shown)


def parse_conninfo(url: str) -> dict[str, str]:
    """libpq's parameters of ``url``; a clear error (that echoes nothing) when it is malformed."""
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(libpq_url(url)).items()}
    except psycopg.ProgrammingError:
        # libpq's own message quotes the offending part, which may be the password.
        raise DatabaseUnavailableError(
            "the database URL is not a valid PostgreSQL connection string (not shown: it may "
            "hold a password); check EMBEDPLAT_DATABASE_URL, and percent-encode special "
            "characters in a URL's password ('%' as %25, '@' as %40)"
        ) from None
    if _host_prefixes(params):
        raise DatabaseUnavailableError(
            "the database URL has an '@' in its user name or password: percent-encode it as "
            "%40 (postgresql://user:p%40ss@host/db); check EMBEDPLAT_DATABASE_URL"
        )
    return params


def with_database(url: str, dbname: str) -> str:
    """``url`` naming database ``dbname`` instead, every other parameter kept (a URL's query
    string too, e.g. the embedded server's ``passfile``)."""
    text = libpq_url(url)
    if not _is_uri(text):
        return make_conninfo(text, dbname=dbname)
    parts = urlsplit(text)
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


def _is_uri(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


def _host_prefixes(params: dict[str, Any]) -> list[str]:
    """Text before an '@' in network host names: a misread part of a URL's user info."""
    hosts = str(params.get("host") or "").split(",")
    return [h.rpartition("@")[0] for h in hosts if "@" in h and not h.startswith("/")]


def _without_prefix(host: str) -> str:
    return host if host.startswith("/") else host.rpartition("@")[2]


def _as_uri(params: dict[str, str]) -> str:
    """A ``postgresql://`` URL for already-masked ``params``."""
    hosts = params.get("host", "").split(",") if params.get("host") else []
    ports = params.get("port", "").split(",") if params.get("port") else []
    query = {k: v for k, v in params.items() if k not in _URI_PARTS}
    netloc = ""
    if any(h.startswith("/") for h in hosts) or (ports and len(ports) != max(len(hosts), 1)):
        # Socket folders (and odd host/port lists) only fit in the query string.
        query = {
            **({"host": params["host"]} if hosts else {}),
            **({"port": params["port"]} if ports else {}),
            **query,
        }
    else:
        pairs = []
        for i, host in enumerate(hosts or [""]):
            name = f"[{host}]" if ":" in host else quote(host, safe="")
            port = ports[i] if i < len(ports) else ""
            pairs.append(f"{name}:{port}" if port else name)
        netloc = ",".join(pairs)
    user = quote(params.get("user", ""), safe="")
    if "password" in params:
        user += ":" + params["password"]
    if user:
        netloc = f"{user}@{netloc}"
    path = "/" + quote(params["dbname"], safe="") if "dbname" in params else ""
    tail = "&".join(
        f"{quote(k, safe='')}={v if v == _MASK else quote(v, safe='/')}" for k, v in query.items()
    )
    return f"postgresql://{netloc}{path}" + (f"?{tail}" if tail else "")


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """Open a psycopg connection, translating connection failures into one clear error."""
    parse_conninfo(url)  # a malformed URL fails here, with a message that does not echo it
    try:
        return psycopg.connect(libpq_url(url), autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise _explain(url, exc) from exc


def create_engine(url: str, *, pool_size: int = 5) -> Engine:
    """A SQLAlchemy engine on psycopg 3 with pre-ping, for the ORM side."""
    import sqlalchemy

    return sqlalchemy.create_engine(
        sqlalchemy_url(url), pool_size=pool_size, pool_pre_ping=True, future=True
    )


def check_database(url: str) -> str:
    """Verify the server is reachable, new enough and has pgvector; return pgvector's version."""
    with connect(url, autocommit=True) as conn:
        server_version = conn.info.server_version
        if server_version < MIN_SERVER_VERSION:
            raise DatabaseUnavailableError(
                f"{redact(url)} runs PostgreSQL {server_version // 10000}; embedplat needs 15 or newer"
            )
        row = conn.execute(
            "SELECT installed_version, default_version FROM pg_available_extensions "
            "WHERE name = 'vector'"
        ).fetchone()
        if row is None:
            raise DatabaseUnavailableError(
                f"pgvector is not installed on the server at {redact(url)}; install pgvector "
                f"{'.'.join(map(str, MIN_PGVECTOR))} or newer there (e.g. the postgresql-17-pgvector "
                "package), or unset EMBEDPLAT_DATABASE_URL to use the embedded database"
            )
        version = str(row[0] or row[1])
        if _version_tuple(version) < MIN_PGVECTOR:
            raise DatabaseUnavailableError(
                f"pgvector {version} on {redact(url)} is too old; embedplat needs "
                f"{'.'.join(map(str, MIN_PGVECTOR))} or newer (ALTER EXTENSION vector UPDATE)"
            )
        return version


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _explain(url: str, exc: psycopg.OperationalError) -> DatabaseUnavailableError:
    text = str(exc).strip()
    where = redact(url)
    if "password authentication failed" in text or "authentication failed" in text:
        return DatabaseUnavailableError(
            f"the database at {where} refused the login: check the user and password in "
            "EMBEDPLAT_DATABASE_URL"
        )
    if "does not exist" in text and "database" in text:
        return DatabaseUnavailableError(
            f"the database named in {where} does not exist: create it (createdb) or fix "
            "EMBEDPLAT_DATABASE_URL"
        )
    if "role" in text and "does not exist" in text:
        return DatabaseUnavailableError(
            f"the user named in {where} does not exist on that server: fix EMBEDPLAT_DATABASE_URL"
        )
    # libpq's first line ends with the reason ("... port 1 failed: Connection refused"); the
    # lines after it are hints.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0].rpartition("failed: ")[2] if lines else ""
    first_line = _scrub(reason or (lines[0] if lines else exc.__class__.__name__), url)
    return DatabaseUnavailableError(
        f"cannot reach the database at {where} ({first_line}): is the server running and the "
        "URL right? Unset EMBEDPLAT_DATABASE_URL to use the embedded database"
    )


def _scrub(text: str, url: str) -> str:
    """libpq's message with the URL's secrets taken out, should libpq ever quote one."""
    try:
        params = conninfo_to_dict(libpq_url(url))
    except psycopg.ProgrammingError:
        return text
    for key in SECRET_PARAMETERS:
        value = str(params.get(key) or "")
        if len(value) >= 4:  # shorter ones would mask ordinary words of the message
            text = text.replace(value, _MASK)
    return text
