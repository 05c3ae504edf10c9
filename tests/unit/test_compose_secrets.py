"""docker-compose.yml keeps its secrets in the user's `.env` and its ports on this host.

Checked without a Docker engine (there is none here): the YAML is parsed and its `${VAR}`
references are resolved the way compose resolves them, from a sample `.env`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
SECURITY_DOC = REPO / "docs" / "security.md"
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
REFERENCE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation for the forms above ($$ is a literal $)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        present = env.get(name)
        unset_or_empty = not present if op and op.startswith(":") else present is None
        if op and op.endswith("?") and unset_or_empty:
            raise MissingVariable(f"{name}: {arg}")
        if op and op.endswith("-") and unset_or_empty:
            return arg
        return present or ""

    return REFERENCE.sub(one, value.replace("$$", "\0")).replace("\0", "$")


def resolved(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolved(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolved(value, env) for key, value in node.items()}
    return node


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def sample_env() -> dict[str, str]:
    """.env.example with its required values filled in, as a user would."""
    env: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    for name in SECRETS:
        env[name] = f"{name.lower().replace('_', '')}0123abcd"
    return env


def test_every_variable_is_documented_in_env_example_and_the_security_doc() -> None:
    names = {m["name"] for m in REFERENCE.finditer(COMPOSE.read_text(encoding="utf-8"))}
    assert set(SECRETS) <= names
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    doc = SECURITY_DOC.read_text(encoding="utf-8")
    for name in names:
        assert re.search(rf"^{name}=", example, re.M), f".env.example lacks {name}"
        assert f"`{name}`" in doc, f"docs/security.md does not explain {name}"
    # No value of a secret ships in the example.
    for name in SECRETS:
        assert re.search(rf"^{name}=$", example, re.M), f"{name} must be blank in the example"


def test_compose_refuses_to_start_without_the_secrets(raw: dict[str, Any]) -> None:
    env = sample_env()
    resolved(raw, env)  # complete: resolves
    for name in SECRETS:
        for missing in ({k: v for k, v in env.items() if k != name}, {**env, name: ""}):
            with pytest.raises(MissingVariable, match=name):
                resolved(raw, missing)
    # Only required references: a secret never falls back to a default written here.
    for match in REFERENCE.finditer(COMPOSE.read_text(encoding="utf-8")):
        if match["name"] in SECRETS:
            assert match["op"] == ":?", match[0]


def test_no_password_is_written_in_the_file(raw: dict[str, Any]) -> None:
    env = sample_env()
    text = COMPOSE.read_text(encoding="utf-8")
    assert "embedplat:embedplat@" not in text
    db = raw["services"]["db"]["environment"]
    assert db["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    resolved_db = resolved(raw, env)["services"]["db"]["environment"]
    assert resolved_db["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    assert resolved_db["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"


def test_published_ports_stay_on_this_host(raw: dict[str, Any]) -> None:
    services = resolved(raw, sample_env())["services"]
    published = {name: svc.get("ports", []) for name, svc in services.items()}
    assert published["db"] and published["redis"]
    for name, ports in published.items():
        for port in ports:
            # host-address:host-port:container-port; a bare "5432:5432" means every interface.
            address, _, _ = str(port).rpartition(":")[0].rpartition(":")
            assert address == "127.0.0.1", f"{name} publishes {port}"


def test_redis_wants_the_password_and_the_workers_send_it(raw: dict[str, Any]) -> None:
    env = sample_env()
    services = resolved(raw, env)["services"]
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == env["REDIS_PASSWORD"]
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == env["REDIS_PASSWORD"]
    for name in ("migrate", "worker", "beat"):
        app_env = services[name]["environment"]
        broker = urlsplit(app_env["EMBEDPLAT_BROKER_URL"])
        assert (broker.hostname, broker.port, broker.password) == (
            "redis",
            6379,
            env["REDIS_PASSWORD"],
        )
        database = urlsplit(app_env["EMBEDPLAT_DATABASE_URL"])
        assert (database.hostname, database.username, database.password) == (
            "db",
            services["db"]["environment"]["POSTGRES_USER"],
            env["POSTGRES_PASSWORD"],
        )
