"""A config file is read strictly (unknown names are errors); the environment is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs import CONFIG_DIR, ConfigError, Settings, load_settings
from configs.config_file import masked_url, unknown_setting_in


@pytest.mark.parametrize("shipped", sorted(CONFIG_DIR.glob("*.env")), ids=lambda path: path.name)
def test_the_shipped_config_files_name_only_known_settings(shipped: Path) -> None:
    assert unknown_setting_in(shipped, Settings.model_fields) is None


def test_an_unknown_name_is_reported_with_its_line_and_the_closest_setting(
    tmp_path: Path,
) -> None:
    config = tmp_path / "typo.env"
    config.write_text("\n# comment\nexport REDIS_URL=redis://127.0.0.1:6379/0\nREDIS_UR=x\n")

    with pytest.raises(ConfigError) as raised:
        load_settings(config)

    assert str(raised.value) == f"{config}:4: unknown setting REDIS_UR (did you mean REDIS_URL?)"


def test_unknown_names_in_the_environment_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKEY_CACHE_TTL", "5")

    assert load_settings().APIKEY_CACHE_TTL_SECONDS == 60


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("postgresql://u:pw@db/game", "use postgresql+asyncpg://u:***@db/game"),
        ("postgresql+psycopg2://u:pw@db/game", "use postgresql+asyncpg://u:***@db/game"),
        ("sqlite:///game.db", "use sqlite+aiosqlite:///game.db"),
        ("mysql://u:pw@db/game", "not a sqlite+aiosqlite:// or postgresql+asyncpg:// URL"),
    ],
)
def test_a_database_url_without_the_async_driver_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, url: str, fix: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)

    with pytest.raises(ConfigError) as raised:
        load_settings()

    assert fix in str(raised.value)
    assert ":pw@" not in str(raised.value)


def test_masked_url_hides_only_the_password() -> None:
    assert masked_url("postgresql+asyncpg://ops:s3cr%40t@db:5432/game") == (
        "postgresql+asyncpg://ops:***@db:5432/game"
    )
    assert masked_url("sqlite+aiosqlite:///./game-api.db") == "sqlite+aiosqlite:///./game-api.db"
