"""Shared fixtures: settings, fake and real Redis, real PostgreSQL.

Real services follow one rule: use the configured one (``REDIS_URL`` / ``TEST_DATABASE_URL``),
else the local default when it answers, else (Redis only) start ``redis-server`` on a free port;
when none can be had the test is skipped with the reason, except under ``CI``, where it fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlparse

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.clients.redis_topologies import build_cluster_client
from app.core import log_setup
from app.services.redis_cache_backend import RedisApiKeyCacheBackend
from tests.support.containers import containers
from tests.support.redis_cluster import RedisClusterProcesses
from tests.support.redis_server import RedisServerProcess

__all__ = ["containers"]  # a fixture shared by the container tests

IN_CI = bool(os.environ.get("CI"))
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_TEST_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TEST_HMAC_SECRET = "test-suite-record-signing-secret"
REDIS_TOPOLOGY_SETTINGS = (
    "REDIS_TOPOLOGY",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_SERVICE",
    "REDIS_SENTINEL_USERNAME",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_CLUSTER_NODES",
    "REDIS_USERNAME",
    "REDIS_PASSWORD",
    "REDIS_TLS",
    "REDIS_TLS_CA_FILE",
    "REDIS_DB",
)


def unavailable(reason: str) -> None:
    """Skip, or fail under CI where every real service must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set, so this is a failure)")
    pytest.skip(reason)


def _tcp_answers(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=0.5
        ):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test inherits the developer's config file or cache settings."""
    for name in ("GAME_API_CONFIG", "APIKEY_CACHE_BACKEND", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in REDIS_TOPOLOGY_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    # A Redis-backed cache needs a record-signing secret; the tests' own, as a deployment's.
    monkeypatch.delenv("APIKEY_CACHE_HMAC_PREVIOUS_SECRETS", raising=False)
    monkeypatch.setenv("APIKEY_CACHE_HMAC_SECRET", TEST_HMAC_SECRET)


@pytest.fixture(autouse=True)
def _access_log_not_inherited() -> Iterator[None]:
    """A test that runs the CLI configures logging for the whole process, as the CLI must, and
    leaves the access log writing to the test's captured stream, which is closed once the test
    ends. An app built by a later test takes the writer it finds (apps resolve it once), so its
    access lines would go to a closed stream: back to unconfigured after every test."""
    yield
    log_setup.reset_access_log()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis for the session (see the module docstring for where it comes from)."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    if _tcp_answers(DEFAULT_REDIS_URL, 6379):
        yield DEFAULT_REDIS_URL
        return
    try:
        server = RedisServerProcess()
        server.start()
    except RuntimeError as exc:
        unavailable(f"no Redis available: {exc}")
        return
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def key_prefix() -> str:
    """A prefix of this test's own, so tests sharing one Redis never see each other's keys."""
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def real_redis(redis_url: str, key_prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield client
    finally:
        cursor = 0
        while True:
            cursor, keys = await client.scan(cursor=cursor, match=key_prefix + "*", count=1000)
            if keys:
                await client.delete(*keys)
            if cursor == 0:
                break
        await client.aclose()


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def fake_redis(fake_server: fakeredis.FakeServer) -> AsyncIterator[Redis]:
    client = fakeredis.FakeAsyncRedis(server=fake_server)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def private_redis() -> Iterator[RedisServerProcess]:
    """A redis-server of this test's own, which it may stop, restart or pause."""
    try:
        server = RedisServerProcess()
        server.start()
    except RuntimeError as exc:
        unavailable(f"cannot start redis-server: {exc}")
        return
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL URL (SQLAlchemy asyncpg form) for the session."""
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    if not _tcp_answers(url.replace("+asyncpg", ""), 5432):
        unavailable(f"PostgreSQL not reachable at {urlparse(url).hostname}")
    return url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    """A private 3-primary, 3-replica Redis Cluster shared by the session's cluster tests.

    Tests that kill nodes must not use this one (the others would see the failover): they
    start a cluster of their own with ``RedisClusterProcesses``.
    """
    try:
        cluster = RedisClusterProcesses()
    except RuntimeError as exc:
        unavailable(f"cannot start a Redis cluster: {exc}")
        return
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        cluster.close()
        unavailable(f"cannot start a Redis cluster: {exc}")
        return
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
async def real_redis_cluster(
    redis_cluster: RedisClusterProcesses, key_prefix: str
) -> AsyncIterator[RedisCluster]:
    """A cluster client as the service builds it (with test-sized timeouts); the test's keys
    are removed from every primary afterwards."""
    client = build_cluster_client(
        redis_cluster.seed_pairs, socket_timeout_ms=5_000, connect_timeout_ms=5_000
    )
    try:
        yield client
    finally:
        await RedisApiKeyCacheBackend(client, key_prefix=key_prefix).clear()
        await client.aclose()
