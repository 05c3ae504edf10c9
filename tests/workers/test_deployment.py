"""docker-compose.yml and Dockerfile, checked without a Docker engine (there is none here).

The compose file must parse, every service of ours must run a command that exists with options
it accepts (each is run with ``--help`` appended, which parses every option first), and every
variable it sets must be one the code reads.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from embedplat_workers.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
# Variables read by libraries rather than by embedplat, and the module that reads each.
THIRD_PARTY_ENV = {"HF_HUB_OFFLINE": "huggingface_hub.constants"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "build" in svc or str(svc.get("image", "")).startswith("embedplat")
    }


def test_compose_has_the_services_with_health_checks_and_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"db", "redis", "migrate", "worker", "beat"} <= set(services)
    assert services["db"]["image"].startswith("pgvector/pgvector:pg17")
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]
    assert services["migrate"]["command"] == ["embedplat", "init"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"


def test_every_service_command_is_a_real_entry_point(compose: dict[str, Any]) -> None:
    scripts = {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}
    for name, svc in _ours(compose).items():
        command = svc["command"]
        assert isinstance(command, list), f"{name}: use the exec form (a list)"
        assert command[0] in scripts, f"{name}: {command[0]} is not an installed entry point"
        if "-A" in command:
            module = command[command.index("-A") + 1]
            assert hasattr(importlib.import_module(module), "app"), f"{name}: {module}.app"
        # --help after the real arguments: click parses (and rejects) every option first.
        env = {**os.environ, **{k: str(v) for k, v in svc.get("environment", {}).items()}}
        env["EMBEDPLAT_HOME"] = str(REPO / ".pytest_cache" / "compose-home")
        # The entry points sit beside this interpreter, also when the venv is not activated.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        done = subprocess.run(
            [*command, "--help"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{name}: {command}\n{done.stdout}\n{done.stderr}"


def _source_text() -> str:
    roots = [REPO / "platform" / "embedplat", REPO / "workers" / "embedplat_workers"]
    return "\n".join(p.read_text(encoding="utf-8") for r in roots for p in r.rglob("*.py"))


def test_compose_sets_only_variables_the_code_reads(compose: dict[str, Any]) -> None:
    source = _source_text()
    for name, svc in _ours(compose).items():
        env = {k: str(v) for k, v in svc.get("environment", {}).items()}
        assert env, f"{name} sets no environment"
        for key in env:
            if key.startswith("EMBEDPLAT_"):
                assert f'"{key}"' in source, f"{name}: nothing reads {key}"
            else:
                module = THIRD_PARTY_ENV.get(key)
                assert module, f"{name}: {key} is neither ours nor a known library variable"
                assert key in inspect.getsource(importlib.import_module(module))
        settings = WorkerSettings.from_env(env)  # the values parse
        assert settings.base.database_url == env["EMBEDPLAT_DATABASE_URL"]
        assert settings.base.broker_url == env["EMBEDPLAT_BROKER_URL"]
        assert settings.base.database_url and "@db:5432/" in settings.base.database_url
        assert "@redis:6379/" in settings.base.broker_url
    db_env = compose["services"]["db"]["environment"]
    url = compose["services"]["worker"]["environment"]["EMBEDPLAT_DATABASE_URL"]
    assert url == (
        f"postgresql://{db_env['POSTGRES_USER']}:{db_env['POSTGRES_PASSWORD']}"
        f"@db:5432/{db_env['POSTGRES_DB']}"
    )


def test_dockerfile_installs_cpu_torch_first_and_copies_every_source_root() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    torch = re.search(r"pip install .*download\.pytorch\.org/whl/cpu torch==2\.13\.0", text)
    app = re.search(r'pip install "\.\[([\w,]+)\]"', text)
    assert torch and app and torch.start() < app.start()
    # Workers embed with whatever backend a collection's model names: every runtime is there.
    assert {"model", "workers", "onnx", "openvino"} <= set(app.group(1).split(","))
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    package_dirs = set(re.findall(r'^"[\w.]+" = "(\w+)(?:/\w+)?"$', pyproject, re.M))
    assert package_dirs == {"platform", "workers", "alembic", "sql", "samples"}
    for folder in package_dirs:
        assert re.search(rf"^COPY {folder} ", text, re.M), f"the image lacks {folder}/"
