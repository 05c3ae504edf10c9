"""Least privilege (migration 0011): the shipped roles and per-collection grants enforced by
row-level security, tried as each role would try them.

Login roles are created per test (unique names; roles are cluster-wide and the server is
shared by the session) and dropped at the end. Collection "alpha" is granted, "beta" is not;
beta's ids, texts and metadata carry a marker that must never show up for a role without a
grant, through any table, view or function of the schema.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from embedplat import grants
from embedplat.api import Platform
from embedplat.config import Settings
from embedplat.db.connection import libpq_url
from embedplat.db.vectors import vector_literal
from embedplat.errors import (
    CollectionNotFoundError,
    EmbedplatError,
    PermissionDeniedError,
    from_server_error,
)
from embedplat.indexes import collection_index_names, missing_index_note
from embedplat.sync import SyncOptions, sync
from tests.fix_cli import run
from tests.fix_embedders import HashEmbedder

from .search_helpers import hash_sync, plans

MARKER = "betasecret"
DIMS = 64

# The functions of the schema that may be SECURITY DEFINER: the attach trigger and the helper
# it calls, which write the attached collection only and return nothing to their caller; and
# the end of a model switch and the purge of the vectors it retired, which only embedplat_worker
# may execute and which do only what the sync engine does (make a complete target active,
# delete retired vectors after their grace period).
SECURITY_DEFINER_ALLOWED = {
    "attach_mark_unhealthy",
    "model_switch_complete",
    "purge_retired_vectors",
}


@dataclass(frozen=True)
class Login:
    name: str
    url: str


def _role_url(db_url: str, role: str, password: str) -> str:
    """The test database's URL for another role: its own user and password, no passfile."""
    params = conninfo_to_dict(libpq_url(db_url))
    params.pop("passfile", None)
    params.update(user=role, password=password)
    return make_conninfo(**params)


def _admin(db_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_url(db_url), autocommit=True)


@dataclass(frozen=True)
class Setup:
    db_url: str
    alpha: int
    beta: int
    model_id: int
    reader: Login  # member of embedplat_reader, granted alpha
    writer: Login  # member of embedplat_writer, granted alpha with write
    worker: Login  # member of embedplat_worker
    stranger: Login  # member of embedplat_reader, no grant at all
    team: str  # a NOLOGIN group role; `member` logs in and inherits its grants
    member: Login


def _rows(prefix: str, n: int, marker: str = "") -> list[dict[str, Any]]:
    words = ["apple", "banana", "cherry", "delta", "echo", "forest", "granite", "harbor"]
    rng = np.random.default_rng(len(prefix) + n)
    return [
        {
            "id": f"{prefix}{i}",
            "text": " ".join(rng.choice(words, 6)) + (f" {marker}" if marker else ""),
            "metadata": {"n": i, **({"tag": marker} if marker else {})},
        }
        for i in range(n)
    ]


@pytest.fixture
def setup(db_url: str, tmp_path: Path) -> Iterator[Setup]:
    suffix = uuid.uuid4().hex[:8]
    names = {k: f"ep_{k}_{suffix}" for k in ("reader", "writer", "worker", "stranger", "member")}
    team = f"ep_team_{suffix}"
    password = uuid.uuid4().hex
    with Platform(db_url, Settings(database_url=None, home=tmp_path / "home")) as platform:
        platform.create_collection("alpha", model=f"test-hash-{DIMS}")
        platform.create_collection("beta", model=f"test-hash-{DIMS}")
        platform.ingest("alpha", _rows("a", 30))
        platform.ingest("alpha", [{"id": "a-copy", "text": _rows("a", 1)[0]["text"]}])
        platform.ingest("beta", _rows(f"b-{MARKER}-", 30, MARKER))
        platform.ingest("beta", [{"id": f"b-{MARKER}-copy", "text": _rows("b", 1)[0]["text"]}])
    hash_sync(db_url, "alpha", DIMS)
    hash_sync(db_url, "beta", DIMS)
    with _admin(db_url) as conn:
        for name in names.values():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(team)))
        conn.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(team), sql.Identifier(names["member"]))
        )
        conn.execute(
            sql.SQL("GRANT embedplat_reader TO {}").format(sql.Identifier(names["stranger"]))
        )
        conn.execute(
            sql.SQL("GRANT embedplat_worker TO {}").format(sql.Identifier(names["worker"]))
        )
        grants.grant(conn, names["reader"], "alpha")
        grants.grant(conn, names["writer"], "alpha", write=True)
        ids = dict(conn.execute("SELECT name, id FROM embedplat.collections").fetchall())
        row = conn.execute(
            "SELECT active_model_id FROM embedplat.collections WHERE name = 'alpha'"
        ).fetchone()
        assert row is not None
        # Parked work and a parked record in both collections: failed_work has rows to hide.
        for cid in ids.values():
            conn.execute(
                "UPDATE embedplat.records SET chunked_hash = NULL, chunk_attempts = 9, "
                "chunk_error = 'failed ' || external_id WHERE id = (SELECT min(id) FROM "
                "embedplat.records WHERE collection_id = %s)",
                (cid,),
            )
            conn.execute(
                "INSERT INTO embedplat.embedding_queue (chunk_id, collection_id, text_hash, state, "
                "attempts, last_error) SELECT ch.id, ch.collection_id, ch.text_hash, 'failed', 5, "
                "'model failed on ' || ch.content FROM embedplat.chunks ch WHERE ch.collection_id = %s "
                "ORDER BY ch.id LIMIT 1",
                (cid,),
            )
        conn.execute("ANALYZE")
    logins = {k: Login(v, _role_url(db_url, v, password)) for k, v in names.items()}
    try:
        yield Setup(
            db_url,
            ids["alpha"],
            ids["beta"],
            int(row[0]),
            logins["reader"],
            logins["writer"],
            logins["worker"],
            logins["stranger"],
            team,
            logins["member"],
        )
    finally:
        with _admin(db_url) as conn:
            for name in [*names.values(), team]:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _connect(login: Login) -> psycopg.Connection[Any]:
    return psycopg.connect(login.url, autocommit=True)


def _relations(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """Every table and view of the schema: (name, kind)."""
    return [
        (str(name), str(kind))
        for name, kind in conn.execute(
            "SELECT c.relname, c.relkind::text FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'embedplat' AND c.relkind IN ('r', 'v', 'm', 'p') ORDER BY 1"
        ).fetchall()
    ]


def _everything_readable(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Each table and view of the schema as one text (every row, every column)."""
    out: dict[str, str] = {}
    for name, _ in _relations(conn):
        rows = conn.execute(
            sql.SQL("SELECT t::text FROM embedplat.{} t").format(sql.Identifier(name))
        ).fetchall()
        out[name] = "\n".join(str(r[0]) for r in rows)
    return out


def _query(dims: int = DIMS) -> str:
    vector = np.zeros(dims, dtype=np.float32)
    vector[:3] = 1.0
    return vector_literal(vector)


# The functions of the schema that read a collection, called on one by name. {q}: a vector.
def _function_calls(collection: str) -> list[str]:
    c = f"'{collection}'"  # fixed names of this module
    return [
        f"SELECT * FROM embedplat.search({c}, %(q)s::vector, 50)",
        f'SELECT * FROM embedplat.search({c}, %(q)s::vector, 50, \'{{"n": {{"$gte": 0}}}}\')',
        f"SELECT * FROM embedplat.hybrid_search({c}, 'apple {MARKER}', %(q)s::vector, 50)",
        f"SELECT * FROM embedplat.hybrid_search({c}, 'apple', NULL, 50)",
        f"SELECT * FROM embedplat.near_duplicates({c}, 0.5)",
        f"SELECT * FROM embedplat.near_duplicate_record_pairs({c}, 0.5)",
        f"SELECT * FROM embedplat.duplicate_groups({c}, 0.5)",
        f"SELECT * FROM embedplat.anomaly_scores({c})",
    ]


def _ungranted_calls(s: Setup) -> list[str]:
    """Calls reaching collection beta some other way: by reference, similar, internal ids."""
    b, m = s.beta, s.model_id
    return [
        f"SELECT * FROM embedplat.similar('beta', 'b-{MARKER}-1')",
        "SELECT * FROM embedplat.anomaly_scores('alpha', reference => 'beta')",
        f"SELECT * FROM embedplat.nearest_chunks(%(q)s::vector, {b}, {m}, {DIMS}, 0, 50)",
        f"SELECT embedplat.nearest_records_mean_distance(%(q)s::vector, {b}, {m}, {DIMS}, 0, 50, 5)",
        f"SELECT * FROM embedplat.nearest_hits({b}, {m}, {DIMS}, %(q)s::vector, 50, '{{}}', NULL, true, 0)",
        f'SELECT * FROM embedplat.nearest_hits({b}, {m}, {DIMS}, %(q)s::vector, 50, \'{{"tag": "{MARKER}"}}\', NULL, true, 0)',
        "SELECT * FROM embedplat.collection_target('beta', 'x')",
    ]


# -- the catalogue ---------------------------------------------------------------------------------


def test_every_view_is_security_invoker_and_every_function_security_invoker(db_url: str) -> None:
    """A view is read with its owner's rights unless security_invoker is set, and a SECURITY
    DEFINER function with its owner's: either would bypass row-level security. A view re-created
    by a later migration (CREATE OR REPLACE VIEW resets its options) fails here."""
    with _admin(db_url) as conn:
        views = conn.execute(
            "SELECT c.relname, coalesce(c.reloptions, '{}') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'embedplat' AND c.relkind IN ('v', 'm')"
        ).fetchall()
        assert views
        for name, options in views:
            assert "security_invoker=true" in options, name
        definers = {
            r[0]
            for r in conn.execute(
                "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'embedplat' AND p.prosecdef"
            ).fetchall()
        }
        assert definers <= SECURITY_DEFINER_ALLOWED, definers - SECURITY_DEFINER_ALLOWED
        # ... and those are not executable by just anyone.
        for name in definers:
            row = conn.execute(
                "SELECT bool_or(has_function_privilege('public', p.oid, 'EXECUTE')) "
                "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'embedplat' AND p.proname = %s AND p.prorettype <> 'trigger'::regtype",
                (name,),
            ).fetchone()
            assert not (row and row[0]), name


def test_every_table_with_collection_data_has_row_level_security(db_url: str) -> None:
    with _admin(db_url) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
            "EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid "
            "        AND a.attname = 'collection_id' AND NOT a.attisdropped) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'embedplat' AND c.relkind = 'r'"
        ).fetchall()
    by_name = {r[0]: r for r in rows}
    for name, rls, forced, has_collection in rows:
        if has_collection or name == "collections":
            assert rls, f"{name} holds collection data without row-level security"
            assert not forced, f"{name}: RLS forced, the admin (owner) would lose access"
    assert by_name["collection_grants"][1]


def test_the_migration_created_nologin_group_roles(db_url: str) -> None:
    with _admin(db_url) as conn:
        rows = conn.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolbypassrls FROM pg_roles "
            "WHERE rolname = ANY(%s)",
            (list(grants.ROLES),),
        ).fetchall()
        assert sorted(r[0] for r in rows) == sorted(grants.ROLES)
        assert not any(any(r[1:]) for r in rows)
        assert conn.execute("SELECT embedplat.install_roles()").fetchone() == (list(grants.ROLES),)


# -- a reader ----------------------------------------------------------------------------------------


def test_a_reader_sees_nothing_of_an_ungranted_collection_through_any_table_or_view(
    setup: Setup,
) -> None:
    with _admin(setup.db_url) as conn:
        as_admin = _everything_readable(conn)
    # The check would see a leak: the admin reads beta's marker in all of these.
    for name in ("records", "chunks", "embedding_queue", "failed_work", "parked_records"):
        assert MARKER in as_admin[name], name
    for login in (setup.reader, setup.stranger, setup.writer):
        with _connect(login) as conn:
            seen = _everything_readable(conn)
            collections = {r[0] for r in conn.execute("SELECT name FROM embedplat.collections")}
        assert set(seen) == set(as_admin)  # every relation readable (no permission error) ...
        for name, text in seen.items():  # ... and none shows beta
            assert MARKER not in text, (login.name, name)
        assert collections == (set() if login is setup.stranger else {"alpha"})
        if login is not setup.stranger:
            assert "a1" in seen["records"] and "failed a" in seen["failed_work"]


def test_a_reader_gets_no_row_of_an_ungranted_collection_from_any_function(setup: Setup) -> None:
    params = {"q": _query()}
    with _connect(setup.reader) as conn:
        for statement in _function_calls("beta") + _ungranted_calls(setup):
            try:
                rows = conn.execute(statement, params).fetchall()
            except psycopg.errors.UndefinedObject as exc:  # "no collection named 'beta'"
                assert "beta" in str(exc) and MARKER not in str(exc), statement
                continue
            except psycopg.errors.NoDataFound as exc:  # similar: no such record
                assert MARKER in statement and "'beta'" in str(exc), statement
                continue
            assert rows in ([], [(None,)]), (statement, rows)
        # The same calls on the granted collection work and return its rows.
        for statement in _function_calls("alpha"):
            rows = conn.execute(statement, params).fetchall()
            assert rows, statement
            assert MARKER not in repr(rows), statement
        hits = conn.execute("SELECT id FROM embedplat.similar('alpha', 'a1', 50)").fetchall()
        assert hits and all(h[0].startswith("a") for h in hits)


def test_the_platform_as_a_reader_searches_its_collection_only(
    setup: Setup, tmp_path: Path
) -> None:
    settings = Settings(database_url=None, home=tmp_path / "reader-home")
    with Platform(setup.reader.url, settings) as platform:
        assert [s.name for s in platform.status()] == ["alpha"]
        hits = platform.search("alpha", "apple banana", k=5)
        assert len(hits) == 5 and all(h.id.startswith("a") for h in hits)
        with pytest.raises(CollectionNotFoundError):
            platform.search("beta", "apple banana", k=5)
        # Refused by the database (the CLI shows it as one line through from_server_error).
        with pytest.raises((EmbedplatError, psycopg.errors.InsufficientPrivilege)) as info:
            platform.ingest("alpha", [{"id": "x", "text": "a reader cannot write"}])
        mapped = (
            from_server_error(info.value) if isinstance(info.value, psycopg.Error) else info.value
        )
        assert isinstance(mapped, PermissionDeniedError) and "embedplat grant" in str(mapped)


def test_the_statistics_of_rls_tables_stay_hidden(setup: Setup) -> None:
    """pg_stats shows column values (most common values, histograms): PostgreSQL hides it for
    tables under row-level security."""
    with _admin(setup.db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stats WHERE schemaname = 'embedplat' AND tablename = 'records'"
        ).fetchone()
        assert row and row[0] > 0
    with _connect(setup.reader) as conn:
        text = conn.execute(
            "SELECT coalesce(string_agg(s::text, ''), '') FROM pg_stats s WHERE schemaname = 'embedplat'"
        ).fetchone()
        assert text is not None and MARKER not in text[0]


def test_a_reader_cannot_write_or_grant(setup: Setup) -> None:
    statements = [
        f"INSERT INTO embedplat.records (collection_id, external_id, content) VALUES ({setup.alpha}, 'x', 'x')",
        f"UPDATE embedplat.records SET content = 'x' WHERE collection_id = {setup.alpha}",
        f"DELETE FROM embedplat.records WHERE collection_id = {setup.alpha}",
        f"DELETE FROM embedplat.embeddings WHERE collection_id = {setup.alpha}",
        f"UPDATE embedplat.collections SET name = 'x' WHERE id = {setup.alpha}",
        f"INSERT INTO embedplat.collection_grants (collection_id, role) VALUES ({setup.beta}, 'embedplat_reader'::regrole)",
        "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap) VALUES ('x', 'm', 10, 0)",
    ]
    with _connect(setup.reader) as conn:
        for statement in statements:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        with pytest.raises(grants.GrantError, match="only the admin"):
            grants.grant(conn, setup.reader.name, "alpha", write=True)
        # It sees its own grant, nobody else's.
        assert [g.role for g in grants.list_grants(conn)] == [setup.reader.name]


_ONLY_ORDERED_SCANS = {"enable_seqscan": "off", "enable_bitmapscan": "off", "enable_sort": "off"}


def test_a_search_as_a_reader_still_uses_the_hnsw_index(setup: Setup) -> None:
    """The policies are a hashed subquery (run once per statement), so the ANN scan stays an
    index scan for a reader as for the admin."""
    index = f"ix_embeddings_ann_c{setup.alpha}_m{setup.model_id}"
    for filter_ in ({}, {"n": {"$gte": 3}}):
        for role in (None, setup.reader.name):
            plan = plans(
                setup.db_url,
                "SELECT * FROM embedplat.search('alpha', %s::vector, 5, %s::jsonb)",
                (_query(), json.dumps(filter_)),
                # A collection this small is cheaper to sort than to walk through the HNSW
                # index; with the alternatives priced out, the plan shows whether the index is
                # usable at all under the policies. RLS applies to the role set.
                settings={**_ONLY_ORDERED_SCANS, **({"role": role} if role else {})},
            )
            assert f"Index Scan using {index}" in plan, (role, plan)
            if role:
                assert "hashed SubPlan" in plan, plan


def test_grants_to_a_group_role_reach_its_members_and_revoke_takes_them_back(
    setup: Setup,
) -> None:
    def visible() -> set[str]:
        with _connect(setup.member) as conn:
            return {
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT c.name FROM embedplat.records r "
                    "JOIN embedplat.collections c ON c.id = r.collection_id"
                ).fetchall()
            }

    with _admin(setup.db_url) as conn:
        grants.grant(conn, setup.team, "beta")
    assert visible() == {"beta"}
    with _admin(setup.db_url) as conn:
        assert grants.revoke(conn, setup.team, "beta") is True
        assert grants.revoke(conn, setup.team, "beta") is False
    assert visible() == set()  # still a member of embedplat_reader: no grant, no rows


# -- a writer --------------------------------------------------------------------------------------


def test_a_writer_writes_its_collection_only(setup: Setup, tmp_path: Path) -> None:
    settings = Settings(database_url=None, home=tmp_path / "writer-home")
    with Platform(setup.writer.url, settings) as platform:
        result = platform.ingest("alpha", [{"id": "w1", "text": "written by the writer"}])
        assert result.inserted == 1
        # beta is invisible, so ingest would create it: a writer may not create collections.
        with pytest.raises((PermissionDeniedError, psycopg.errors.InsufficientPrivilege)):
            platform.ingest("beta", [{"id": "w1", "text": "not here"}])
    with _connect(setup.writer) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO embedplat.records (collection_id, external_id, content) "
                "VALUES (%s, 'w2', 'into beta')",
                (setup.beta,),
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(  # moving a record of alpha into beta
                "UPDATE embedplat.records SET collection_id = %s WHERE external_id = 'w1'",
                (setup.beta,),
            )
        for statement in (
            "UPDATE embedplat.records SET content = 'changed' WHERE collection_id = %s",
            "DELETE FROM embedplat.records WHERE collection_id = %s",
        ):
            assert conn.execute(statement, (setup.beta,)).rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "UPDATE embedplat.collections SET index_options = '{}' WHERE id = %s",
                (setup.alpha,),
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO embedplat.chunks (record_id, collection_id, ordinal, content, char_start, char_end, token_count) SELECT id, collection_id, 99, 'x', 0, 1, 1 FROM embedplat.records LIMIT 1"
            )
        assert (
            conn.execute(
                "DELETE FROM embedplat.records WHERE collection_id = %s AND external_id = 'w1'",
                (setup.alpha,),
            ).rowcount
            == 1
        )
    with _admin(setup.db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM embedplat.records WHERE collection_id = %s AND content LIKE %s",
            (setup.beta, f"%{MARKER}%"),
        ).fetchone()
        assert row == (30,)  # beta untouched


# -- a worker --------------------------------------------------------------------------------------


def test_a_worker_chunks_and_embeds_but_runs_no_ddl(setup: Setup, tmp_path: Path) -> None:
    with _admin(setup.db_url) as conn:
        conn.execute(
            "INSERT INTO embedplat.records (collection_id, external_id, content) "
            "VALUES (%s, 'new1', 'fresh apple text'), (%s, 'new2', 'fresh banana text')",
            (setup.alpha, setup.beta),
        )
    for collection in ("alpha", "beta"):
        report = hash_sync(setup.worker.url, collection, DIMS)
        assert report.chunks_embedded >= 1, report
    with _admin(setup.db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM embedplat.embeddings e JOIN embedplat.records r ON r.id = e.record_id "
            "WHERE r.external_id IN ('new1', 'new2')"
        ).fetchone()
        assert row == (2,)
    ddl = [
        "CREATE INDEX ON embedplat.embeddings (created_at)",
        f"CREATE INDEX CONCURRENTLY ix_evil ON embedplat.embeddings USING hnsw ((embedding::vector({DIMS})) vector_cosine_ops)",
        "DROP INDEX embedplat.ix_records_metadata",
        "CREATE TABLE embedplat.evil (x int)",
        "CREATE FUNCTION embedplat.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "ALTER TABLE embedplat.records DISABLE ROW LEVEL SECURITY",
        "TRUNCATE embedplat.embeddings",
        "DROP TABLE embedplat.chunks",
        "CREATE TABLE public.evil (x int)",
        "INSERT INTO embedplat.records (collection_id, external_id, content) VALUES (1, 'x', 'x')",
        "DELETE FROM embedplat.records",
        "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap) VALUES ('x', 'm', 10, 0)",
        "DELETE FROM embedplat.collections",
        "INSERT INTO embedplat.collection_grants (collection_id, role) VALUES (1, 'embedplat_reader'::regrole)",
    ]
    with _connect(setup.worker) as conn:
        for statement in ddl:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_a_worker_sync_reports_the_index_it_may_not_build(setup: Setup) -> None:
    with _admin(setup.db_url) as conn:
        for name in collection_index_names(conn, setup.alpha):
            conn.execute(sql.SQL("DROP INDEX embedplat.{}").format(sql.Identifier(name)))
        conn.execute(
            "INSERT INTO embedplat.records (collection_id, external_id, content) "
            "VALUES (%s, 'new3', 'fresh cherry text')",
            (setup.alpha,),
        )
    report = hash_sync(setup.worker.url, "alpha", DIMS)
    assert report.chunks_embedded == 1 and report.indexes_built == []
    assert report.notes == [missing_index_note("alpha")]
    assert "run `embedplat index alpha` as the owner" in report.notes[0]
    with _admin(setup.db_url) as conn:
        assert collection_index_names(conn, setup.alpha) == []
    # the owner's next sync builds it
    assert len(hash_sync(setup.db_url, "alpha", DIMS).indexes_built) == 1


def test_a_worker_back_fills_and_ends_a_model_switch_that_only_the_owner_may_start(
    setup: Setup,
) -> None:
    new_model = f"test-hash-{DIMS // 2}"
    with _connect(setup.worker) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM embedplat.model_switch('alpha', %s)", (new_model,))
    with _admin(setup.db_url) as conn:
        conn.execute("SELECT * FROM embedplat.model_switch('alpha', %s)", (new_model,))
    with _connect(setup.reader) as conn:
        for call in (
            "SELECT * FROM embedplat.model_switch_complete('alpha')",
            "SELECT embedplat.purge_retired_vectors(1)",
            "SELECT * FROM embedplat.model_switch_cancel('alpha')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(call)
            conn.rollback()
    report = sync(
        lambda: psycopg.connect(setup.worker.url),
        lambda name: HashEmbedder(int(name.rsplit("-", 1)[1])),
        "alpha",
        SyncOptions(),
    )
    # The worker may not build the target's index, and the active model has one: no swap,
    # and a note saying who can finish it.
    assert report.switch_chunks_embedded > 0 and report.switched == []
    assert any("as the schema owner" in note for note in report.notes), report.notes
    owner = hash_sync(setup.db_url, "alpha", DIMS)
    assert owner.switched == ["alpha"]
    with _admin(setup.db_url) as conn:
        row = conn.execute(
            "SELECT m.name FROM embedplat.collections c JOIN embedplat.embedding_models m "
            "ON m.id = c.active_model_id WHERE c.id = %s",
            (setup.alpha,),
        ).fetchone()
        assert row == (new_model,)
        conn.execute("UPDATE embedplat.retired_models SET retired_at = now() - interval '1 hour'")
    # The worker purges the retired vectors through the SECURITY DEFINER function.
    purged = sync(
        lambda: psycopg.connect(setup.worker.url),
        lambda name: HashEmbedder(int(name.rsplit("-", 1)[1])),
        "alpha",
        SyncOptions(),
    )
    assert purged.retired_vectors_deleted > 0


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_grant_and_revoke(setup: Setup, url_env: dict[str, str]) -> None:
    role = setup.stranger.name
    out = run(["grant", role, "beta", "--write"], url_env)
    assert "read and write" in out.stdout and repr(role) in out.stdout
    listed = json.loads(run(["grants", "beta", "--json"], url_env).stdout)
    assert {"role": role, "collection": "beta", "write": True} in listed["grants"]
    with _connect(setup.stranger) as conn:
        assert conn.execute(
            "SELECT count(*) FROM embedplat.records WHERE collection_id = %s", (setup.beta,)
        ).fetchone() == (31,)
    run(["revoke", role, "beta"], url_env)
    with _connect(setup.stranger) as conn:
        assert conn.execute("SELECT count(*) FROM embedplat.records").fetchone() == (0,)
    bad = run(["grant", "no_such_role_xyz", "beta"], url_env, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: no role named")
    bad = run(["grant", role, "nope"], url_env, check=False)
    assert bad.returncode == 1 and "no collection named 'nope'" in bad.stderr
