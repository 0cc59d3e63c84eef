"""Cache backends for the correctness suite, each on the test's own clients and key prefix."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from app.repositories.memory import InMemoryApiKeyRepository
from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend, RedisApiKeyCacheBackend
from app.services.cache_contracts import CoherentCacheBackend
from app.services.circuit_breaker import CircuitBreakingCacheBackend
from tests.correctness.support import ControlledRepository

BACKENDS = ["memory", "fakeredis", "redis", "guarded-redis"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, key_prefix: str) -> CoherentCacheBackend:
    """Every backend the race must be closed for; ``guarded-redis`` is the production shape."""
    if request.param == "memory":
        return InMemoryApiKeyCacheBackend()
    client_fixture = "fake_redis" if request.param == "fakeredis" else "real_redis"
    client = request.getfixturevalue(client_fixture)
    assert isinstance(client, Redis)
    redis_backend = RedisApiKeyCacheBackend(client, key_prefix=key_prefix)
    if request.param == "guarded-redis":
        return CircuitBreakingCacheBackend(redis_backend, operation_timeout_seconds=5.0)
    return redis_backend


@pytest.fixture
def repository() -> ControlledRepository:
    return ControlledRepository(InMemoryApiKeyRepository())
