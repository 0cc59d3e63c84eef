"""Settings: documented names and defaults, precedence, config files, and start-up failures."""

from __future__ import annotations

from pathlib import Path

import pytest

import configs as configs_module
from configs import CONFIG_DIR, ConfigError, load_settings, reload_configs


def test_defaults_are_the_documented_ones() -> None:
    settings = load_settings()
    assert settings.APIKEY_CACHE_BACKEND == "memory"
    assert settings.REDIS_URL is None
    assert settings.APIKEY_CACHE_REDIS_KEY_PREFIX == "game:apikey:"
    assert settings.APIKEY_CACHE_TTL_SECONDS == 60
    assert settings.DATABASE_URL.get_secret_value().startswith("sqlite+aiosqlite:///")


def test_config_file_is_chosen_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAME_API_CONFIG", str(CONFIG_DIR / "redis.env"))
    settings = load_settings()
    assert settings.APIKEY_CACHE_BACKEND == "redis"
    assert settings.REDIS_URL is not None


def test_explicit_path_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAME_API_CONFIG", str(CONFIG_DIR / "redis.env"))
    assert load_settings(CONFIG_DIR / "memory.env").APIKEY_CACHE_BACKEND == "memory"


def test_environment_variables_win_over_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKEY_CACHE_BACKEND", "memory")
    monkeypatch.setenv("APIKEY_CACHE_TTL_SECONDS", "7")
    settings = load_settings(CONFIG_DIR / "redis.env")
    assert settings.APIKEY_CACHE_BACKEND == "memory"
    assert settings.APIKEY_CACHE_TTL_SECONDS == 7


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("APIKEY_CACHE_BACKEND", "memcached"),
        ("APIKEY_CACHE_TTL_SECONDS", "sixty"),
        ("APIKEY_CACHE_TTL_SECONDS", "-1"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
    ],
)
def test_a_bad_value_fails_with_a_message_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, bad: str
) -> None:
    monkeypatch.setenv(name, bad)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_a_bad_value_in_a_file_names_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "bad.env"
    config.write_text("APIKEY_CACHE_BACKEND=memcached\n")
    with pytest.raises(ConfigError, match="APIKEY_CACHE_BACKEND"):
        load_settings(config)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.env")


def test_configs_attribute_reads_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKEY_CACHE_BACKEND", "redis")
    reload_configs()
    try:
        from configs import configs

        assert configs.APIKEY_CACHE_BACKEND == "redis"
    finally:
        monkeypatch.delenv("APIKEY_CACHE_BACKEND")
        reload_configs()
    assert configs_module.configs.APIKEY_CACHE_BACKEND == "memory"


def test_secrets_are_not_shown_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in repr(load_settings())
