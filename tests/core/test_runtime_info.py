"""Credentials never reach the startup event: URLs are shown with their passwords masked."""

from __future__ import annotations

import pytest

from app.core.runtime_info import masked_database_url, masked_redis_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:s3cret@cache:6380/1", "rediss://app:***@cache:6380/1"),
        ("redis://s3cret@cache:6379/0", "redis://***@cache:6379/0"),
        ("unix:///run/redis.sock?db=2&password=s3cret", "unix:///run/redis.sock?db=2&password=***"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_redis_url_password_is_masked(url: str, shown: str) -> None:
    assert masked_redis_url(url) == shown


def test_database_url_password_is_masked() -> None:
    shown = masked_database_url("postgresql+asyncpg://game:s3cret@db:5432/game")
    assert shown == "postgresql+asyncpg://game:***@db:5432/game"
    assert masked_database_url("sqlite+aiosqlite:///./game-api.db") == (
        "sqlite+aiosqlite:///./game-api.db"
    )
