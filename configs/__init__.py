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
from configs.redis_addresses import parse_host_ports, prefix_keeps_pairs_on_one_slot

CONFIG_ENV_VAR = "GAME_API_CONFIG"
CONFIG_DIR = Path(__file__).resolve().parent

CacheBackendName = Literal["memory", "redis", "tiered"]
RedisTopology = Literal["single", "sentinel", "cluster"]
# The setting that gives each topology its address: without it, Redis is not configured.
TOPOLOGY_ADDRESS_SETTING = {
    "single": "REDIS_URL",
    "sentinel": "REDIS_SENTINELS",
    "cluster": "REDIS_CLUSTER_NODES",
}
# Settings of the sentinel and cluster data nodes; with ``single`` the URL carries them.
DATA_NODE_SETTINGS = ("REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_TLS_CA_FILE", "REDIS_DB")
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
    # Which Redis deployment the cache runs on (see "Redis topologies" in the README): one
    # server by URL, a Sentinel-managed primary (followed across failovers), or a Cluster.
    REDIS_TOPOLOGY: RedisTopology = "single"
    REDIS_URL: SecretStr | None = None
    REDIS_SENTINELS: str | None = None
    REDIS_SENTINEL_SERVICE: str = Field(default="mymaster", min_length=1)
    REDIS_SENTINEL_USERNAME: str | None = None
    REDIS_SENTINEL_PASSWORD: SecretStr | None = None
    REDIS_CLUSTER_NODES: str | None = None
    # The data nodes of a sentinel or cluster topology (``single`` puts these in REDIS_URL).
    REDIS_USERNAME: str | None = None
    REDIS_PASSWORD: SecretStr | None = None
    REDIS_TLS: bool = False
    REDIS_TLS_CA_FILE: str | None = None
    REDIS_DB: int = Field(default=0, ge=0, le=1_000)
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

    @field_validator(
        "REDIS_URL",
        "REDIS_SENTINELS",
        "REDIS_CLUSTER_NODES",
        "REDIS_SENTINEL_USERNAME",
        "REDIS_SENTINEL_PASSWORD",
        "REDIS_USERNAME",
        "REDIS_PASSWORD",
        "REDIS_TLS_CA_FILE",
        mode="before",
    )
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

    @field_validator("REDIS_SENTINELS", "REDIS_CLUSTER_NODES")
    @classmethod
    def _host_port_list(cls, value: str | None) -> str | None:
        if value is not None:
            parse_host_ports(value)
        return value

    @field_validator("REDIS_TLS_CA_FILE")
    @classmethod
    def _ca_file_exists(cls, value: str | None) -> str | None:
        """A missing CA file would otherwise surface as a TLS error on the first request."""
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _topology_is_complete(self) -> Settings:
        """The chosen topology has its address, and nothing is set that it would ignore."""
        topology = self.REDIS_TOPOLOGY
        address = TOPOLOGY_ADDRESS_SETTING[topology]
        if topology != "single" and getattr(self, address) is None:
            raise ValueError(f"REDIS_TOPOLOGY={topology} needs {address}")
        if topology == "single":
            stray = [name for name in DATA_NODE_SETTINGS if getattr(self, name) not in (None, 0)]
            stray += ["REDIS_TLS"] if self.REDIS_TLS else []
            if stray:
                raise ValueError(
                    f"{', '.join(stray)} apply to REDIS_TOPOLOGY=sentinel or cluster; with "
                    "single, put them in REDIS_URL (rediss://, user:password@, /db)"
                )
        if topology == "cluster" and self.REDIS_DB != 0:
            raise ValueError("REDIS_DB must be 0 with REDIS_TOPOLOGY=cluster (a cluster has db 0)")
        if topology == "cluster" and not prefix_keeps_pairs_on_one_slot(
            self.APIKEY_CACHE_REDIS_KEY_PREFIX
        ):
            raise ValueError(
                "APIKEY_CACHE_REDIS_KEY_PREFIX must not hold an unmatched '{' or '}' with "
                "REDIS_TOPOLOGY=cluster (a key's value and record must share a slot)"
            )
        if self.REDIS_TLS_CA_FILE is not None and not self.REDIS_TLS:
            raise ValueError("REDIS_TLS_CA_FILE is set but REDIS_TLS is false")
        return self

    def redis_is_configured(self) -> bool:
        """The chosen topology has its address setting (else the cache falls back to memory)."""
        return getattr(self, TOPOLOGY_ADDRESS_SETTING[self.REDIS_TOPOLOGY]) is not None

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
            and self.redis_is_configured()
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
        # Parsed here, once: the client builders take (host, port) pairs.
        for name in ("REDIS_SENTINELS", "REDIS_CLUSTER_NODES"):
            text = values[name]
            values[f"{name}_PARSED"] = parse_host_ports(text) if text is not None else None
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
