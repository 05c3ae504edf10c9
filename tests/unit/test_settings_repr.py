"""Settings never show a connection URL (which may carry a password) in their repr."""

from __future__ import annotations

from embedplat.config import Settings
from embedplat_workers.settings import WorkerSettings


def test_settings_repr_hides_urls() -> None:
    env = {
        "EMBEDPLAT_DATABASE_URL": "postgresql://bob:s3cret@db:5432/x",
        "EMBEDPLAT_BROKER_URL": "redis://:hunter2@redis:6379/0",
    }
    settings = Settings.from_env(env)
    assert settings.database_url == env["EMBEDPLAT_DATABASE_URL"]  # the value is kept
    for text in (repr(settings), repr(WorkerSettings.from_env(env))):
        assert "s3cret" not in text and "hunter2" not in text
