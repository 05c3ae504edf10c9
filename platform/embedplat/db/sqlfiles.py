"""Where the repository's ``alembic/``, ``sql/`` and ``samples/`` folders are at run time.

In a wheel they ship inside the package (``embedplat.migrations``, ``embedplat.sqlfiles``,
``embedplat.samples``, see pyproject.toml); in a checkout or an editable install they are read
from the repository itself.

Migrations execute the ``sql/`` files; a file is never edited once a migration uses it. A changed
function gets a new file (``name.v2.sql``) and a new migration, so every revision stays
reproducible and a downgrade can re-apply the older file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_CHECKOUT_ROOT = Path(__file__).resolve().parents[3]
_FOLDERS = {
    "embedplat.migrations": "alembic",
    "embedplat.sqlfiles": "sql",
    "embedplat.samples": "samples",
}


def resource_dir(package: str) -> Path:
    """The folder behind ``package`` (one of the three above)."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    folder = _CHECKOUT_ROOT / _FOLDERS[package]
    if not folder.is_dir():
        raise FileNotFoundError(f"embedplat is installed without its {_FOLDERS[package]}/ folder")
    return folder


def read_sql(name: str) -> str:
    """The text of ``sql/<name>``."""
    return (resource_dir("embedplat.sqlfiles") / name).read_text(encoding="utf-8")


def function_sql(name: str, function: str) -> str:
    """The ``CREATE OR REPLACE FUNCTION function(...)`` statement of ``sql/<name>``, through the
    end of its ``$fn$`` body: a downgrade re-applies one function of an older file this way."""
    text = read_sql(name)
    start = text.index(f"CREATE OR REPLACE FUNCTION {function}(")
    body = text.index("$fn$", text.index("AS $fn$", start) + len("AS $fn$"))
    return text[start : body + len("$fn$")] + ";"


def view_sql(name: str, view: str) -> str:
    """The ``CREATE OR REPLACE VIEW view`` statement of ``sql/<name>`` with the ``COMMENT ON
    VIEW`` that follows it, when it has one (a view redefined in a later file may not)."""
    text = read_sql(name)
    start = text.index(f"CREATE OR REPLACE VIEW {view} AS")
    end = text.index(";\n", start)
    comment = text.find(f"COMMENT ON VIEW {view} IS", end)
    following = text.find("CREATE OR REPLACE", end)
    if comment != -1 and (following == -1 or comment < following):
        end = text.index(";\n", comment)
    return text[start : end + 1]
