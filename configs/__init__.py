"""Process settings for game-api.

Values come from, highest first: environment variables of the same names, the config file named
by ``GAME_API_CONFIG`` (or ``--config``), then the defaults below. ``from configs import configs``
gives the settings of this process; they are loaded on first access so that the command line can
choose the config file before anything reads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from configs.config_file import masked_url, unknown_setting_in

CONFIG_ENV_VAR = "GAME_API_CONFIG"
CONFIG_DIR = Path(__file__).resolve().parent

CacheBackendName = Literal["memory", "redis", "tiered"]
MIN_HMAC_SECRET_BYTES = 16

# The async drivers the service is built on; a URL without one fails only when first used.
DATABASE_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


class ConfigError(Exception):
    """Settings cannot be loaded; the message names the setting or file at fault."""


class Settings(BaseSettings):
    """Every setting the service reads. Nothing else in the project reads ``os.environ``."""

    model_config = SettingsConfigDict(
        env_file_encoding="utf-8", extra="ignore", case_sensitive=True, frozen=True
    )

    APIKEY_CACHE_BACKEND: CacheBackendName = "memory"
    REDIS_URL: SecretStr | None = None
    APIKEY_CACHE_REDIS_KEY_PREFIX: str = Field(default="game:apikey:", min_length=1)
    # Signs the key records the service keeps in Redis (HMAC-SHA256): Redis is a cache, never an
    # authority. Required with a Redis-backed cache; the previous secrets (comma-separated) are
    # still accepted when verifying, for a rotation window, but never used to sign.
    APIKEY_CACHE_HMAC_SECRET: SecretStr | None = None
    APIKEY_CACHE_HMAC_PREVIOUS_SECRETS: SecretStr | None = None
    APIKEY_CACHE_TTL_SECONDS: int = Field(default=60, ge=0, le=86_400)
    APIKEY_CACHE_MAX_ENTRIES: int = Field(default=100_000, ge=1)
    APIKEY_RECORD_MEMO_MAX_ENTRIES: int = Field(default=100_000, ge=1)
    APIKEY_NEGATIVE_TTL_SECONDS: int = Field(default=5, ge=0, le=3_600)
    APIKEY_NEGATIVE_MAX_ENTRIES: int = Field(default=10_000, ge=1)
    APIKEY_CACHE_L1_TTL_SECONDS: int = Field(default=60, ge=0, le=86_400)
    APIKEY_CACHE_L1_MAX_ENTRIES: int = Field(default=100_000, ge=1)
    APIKEY_INVALIDATION_ACK_TIMEOUT_MS: int = Field(default=500, ge=1, le=60_000)
    APIKEY_REVOCATION_POLL_MS: int = Field(default=1_000, ge=10, le=60_000)
    APIKEY_LEASE_SECONDS: float = Field(default=10.0, gt=0, le=3_600)
    APIKEY_REVOCATION_TIMEOUT_SECONDS: float = Field(default=15.0, gt=0, le=3_600)
    APIKEY_HEADER_NAME: str = Field(default="X-API-Key", pattern=r"^[A-Za-z0-9-]+$")
    REDIS_SOCKET_TIMEOUT_MS: int = Field(default=200, ge=1, le=10_000)
    REDIS_CONNECT_TIMEOUT_MS: int = Field(default=200, ge=1, le=10_000)
    REDIS_MAX_CONNECTIONS: int = Field(default=64, ge=1, le=10_000)
    CACHE_BREAKER_FAILURE_THRESHOLD: int = Field(default=5, ge=1)
    CACHE_BREAKER_RESET_SECONDS: float = Field(default=5.0, gt=0, le=3_600)
    DATABASE_URL: SecretStr = SecretStr("sqlite+aiosqlite:///./game-api.db")
    DATABASE_TIMEOUT_SECONDS: float = Field(default=2.0, gt=0, le=60)
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Telemetry (app/core/log_setup.py, app/api/telemetry.py, app/api/request_telemetry.py):
    # ``console`` lines for a person, ``json`` lines for a log pipeline; one access event per
    # request; ``GET /metrics`` for Prometheus. ``METRICS_DIR`` is where gunicorn workers share
    # their counters (default: a fresh temporary directory per ``game-api serve``).
    LOG_FORMAT: Literal["console", "json"] = "console"
    ACCESS_LOG: bool = True
    METRICS_ENABLED: bool = True
    METRICS_DIR: str | None = None
    # The edge: every request is bounded before it is parsed, routed or authenticated (see
    # app/api/request_limits.py and app/server_worker.py). The floors keep the API usable; the
    # ceilings keep a typo from switching a bound off in practice.
    HTTP_MAX_BODY_BYTES: int = Field(default=65_536, ge=1_024, le=100 * 1024 * 1024)
    HTTP_MAX_HEADER_BYTES: int = Field(default=16_384, ge=1_024, le=1024 * 1024)
    HTTP_MAX_HEADER_COUNT: int = Field(default=100, ge=10, le=1_000)
    HTTP_HEADER_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=300)
    HTTP_KEEPALIVE_TIMEOUT_SECONDS: int = Field(default=5, ge=1, le=300)
    HTTP_MAX_CONNECTIONS_PER_WORKER: int = Field(default=1_000, ge=1, le=100_000)
    # Adds an ``X-Worker-Id`` (process id) response header, so multi-worker tests can tell which
    # gunicorn worker answered. Off in real deployments.
    EXPOSE_WORKER_ID: bool = False
    # Adds ``GET /bench/redis-get`` (one raw Redis GET per request), the limit the benchmark
    # compares the redis backend with. Off in real deployments.
    BENCH_ROUTES: bool = False

    @field_validator("REDIS_URL", mode="before")
    @classmethod
    def _empty_url_is_none(cls, value: Any) -> Any:
        """An empty ``REDIS_URL=`` in a file means "not configured", not an invalid URL."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _lease_outlasts_a_poll(self) -> Settings:
        if self.APIKEY_LEASE_SECONDS * 1000 <= self.APIKEY_REVOCATION_POLL_MS:
            raise ValueError(
                "APIKEY_LEASE_SECONDS must be longer than APIKEY_REVOCATION_POLL_MS: a process "
                "would lose its lease between two polls"
            )
        return self

    @field_validator("DATABASE_URL")
    @classmethod
    def _async_driver(cls, value: SecretStr) -> SecretStr:
        """Name the fix at load time instead of a ``ModuleNotFoundError`` at first use."""
        url = value.get_secret_value()
        scheme, separator, rest = url.partition("://")
        if separator and scheme in DATABASE_DRIVERS.values():
            return value
        dialect = scheme.split("+", 1)[0]
        dialect = "postgresql" if dialect == "postgres" else dialect
        if separator and dialect in DATABASE_DRIVERS:
            raise ValueError(
                f"{masked_url(url)} does not name the async driver: "
                f"use {masked_url(f'{DATABASE_DRIVERS[dialect]}://{rest}')}"
            )
        shown = f"{masked_url(url)} is" if separator else "it is"  # not a URL: never echo it
        raise ValueError(f"{shown} not a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")

    def database_url_for_display(self) -> str:
        """The database URL with its password masked, for messages and logs."""
        return masked_url(self.DATABASE_URL.get_secret_value())

    @field_validator(
        "APIKEY_CACHE_HMAC_SECRET", "APIKEY_CACHE_HMAC_PREVIOUS_SECRETS", mode="before"
    )
    @classmethod
    def _empty_secret_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("APIKEY_CACHE_HMAC_SECRET", "APIKEY_CACHE_HMAC_PREVIOUS_SECRETS")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        """A short secret can be guessed offline from any one record read out of Redis."""
        if value is not None:
            parts = [part.strip() for part in value.get_secret_value().split(",")]
            if any(len(part.encode("utf-8")) < MIN_HMAC_SECRET_BYTES for part in parts if part):
                raise ValueError(f"each secret must be at least {MIN_HMAC_SECRET_BYTES} bytes")
        return value

    @model_validator(mode="after")
    def _redis_cache_needs_a_secret(self) -> Settings:
        """Refuse to start a Redis-backed cache that would trust whatever Redis says."""
        if (
            self.APIKEY_CACHE_BACKEND in ("redis", "tiered")
            and self.REDIS_URL is not None
            and self.APIKEY_CACHE_HMAC_SECRET is None
        ):
            raise ValueError(
                "APIKEY_CACHE_HMAC_SECRET must be set when APIKEY_CACHE_BACKEND is "
                f"{self.APIKEY_CACHE_BACKEND} (it authenticates the key records kept in Redis)"
            )
        return self

    def cache_settings(self) -> dict[str, Any]:
        """The settings as plain values for the container's ``Configuration`` provider."""
        values = self.model_dump()
        for name, value in values.items():
            if isinstance(value, SecretStr):
                values[name] = value.get_secret_value()
        values["APIKEY_REVOCATION_POLL_SECONDS"] = self.APIKEY_REVOCATION_POLL_MS / 1000.0
        return values


def config_file_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file in force: ``explicit``, else ``$GAME_API_CONFIG``, else none."""
    chosen = explicit if explicit is not None else os.environ.get(CONFIG_ENV_VAR)
    if not chosen:
        return None
    path = Path(chosen)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return path


def load_settings(config_file: str | os.PathLike[str] | None = None) -> Settings:
    """Load settings, turning validation errors into one line that names each bad setting."""
    path = config_file_path(config_file)
    if path is not None:
        try:
            problem = unknown_setting_in(path, Settings.model_fields)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        if problem is not None:
            raise ConfigError(problem)
    try:
        return Settings(_env_file=path)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        where = f" (config file {path})" if path is not None else ""
        raise ConfigError(f"invalid settings{where}: {problems}") from None


_loaded: Settings | None = None


def reload_configs(config_file: str | os.PathLike[str] | None = None) -> Settings:
    """Reload the process settings (the CLI calls this after parsing ``--config``)."""
    global _loaded
    _loaded = load_settings(config_file)
    return _loaded


def __getattr__(name: str) -> Settings:
    if name == "configs":
        return _loaded if _loaded is not None else reload_configs()
    raise AttributeError(name)
