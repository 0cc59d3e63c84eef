"""Cache backends for the correctness suite, each on the test's own clients and key prefix."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from app.repositories.memory import InMemoryApiKeyRepository
from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend, RedisApiKeyCacheBackend
from app.services.cache_factories import guard_cache
from app.services.cache_protocol import CoherentCacheBackend
from tests.correctness.support import ControlledRepository

BACKENDS = ["memory", "fakeredis", "redis", "guarded-redis"]


SHARED_BACKENDS = [name for name in BACKENDS if name != "memory"]


def _build_backend(
    name: str, request: pytest.FixtureRequest, key_prefix: str
) -> CoherentCacheBackend:
    if name == "memory":
        return InMemoryApiKeyCacheBackend()
    client_fixture = "fake_redis" if name == "fakeredis" else "real_redis"
    client = request.getfixturevalue(client_fixture)
    assert isinstance(client, Redis)
    redis_backend = RedisApiKeyCacheBackend(client, key_prefix=key_prefix)
    if name == "guarded-redis":
        return guard_cache(redis_backend, operation_timeout_seconds=5.0)
    return redis_backend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, key_prefix: str) -> CoherentCacheBackend:
    """Every backend the race must be closed for; ``guarded-redis`` is the production shape."""
    return _build_backend(request.param, request, key_prefix)


@pytest.fixture(params=SHARED_BACKENDS)
def shared_backend(request: pytest.FixtureRequest, key_prefix: str) -> CoherentCacheBackend:
    """The backends whose entries every worker reads (memory is per process)."""
    return _build_backend(request.param, request, key_prefix)


@pytest.fixture
def repository() -> ControlledRepository:
    return ControlledRepository(InMemoryApiKeyRepository())
