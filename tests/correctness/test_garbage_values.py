"""Garbage under the cache prefix is a miss and is removed, never an error or an admit.

Run against fakeredis and a real Redis, on the bare backend and behind the circuit breaker (the
production shape): a corrupt value must neither raise nor count as a Redis failure that would
open the breaker, and the key must still authenticate from the repository.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from app.domain.keys import digest
from app.services.apikey_cache_backend import RedisApiKeyCacheBackend
from app.services.apikey_service import ApiKeyService
from app.services.cache_factories import guard_cache
from app.services.metrics import CacheMetrics
from tests.correctness.support import ControlledRepository

Plant = Callable[[Redis, str], Awaitable[object]]

GARBAGE: dict[str, Plant] = {
    "invalid-json": lambda client, key: client.set(key, b"{not json"),
    "invalid-utf8": lambda client, key: client.set(key, b"\xff\xfe\x00garbage"),
    "json-list": lambda client, key: client.set(key, b'["apiKey", true]'),
    "wrong-types": lambda client, key: client.set(key, json.dumps({"apiKey": 1, "active": "yes"})),
    "missing-field": lambda client, key: client.set(key, json.dumps({"apiKey": "game_x"})),
    "extra-field": lambda client, key: client.set(
        key, json.dumps({"apiKey": "game_x", "active": True, "admin": True})
    ),
    "one-megabyte": lambda client, key: client.set(key, b"x" * (1024 * 1024)),
    "hash-type": lambda client, key: client.hset(key, mapping={"apiKey": "x", "active": "1"}),
    "list-type": lambda client, key: client.rpush(key, "a", "b"),
    "set-type": lambda client, key: client.sadd(key, "a"),
}


@pytest.fixture(params=["fakeredis", "redis"])
def client(request: pytest.FixtureRequest) -> Redis:
    fixture = "fake_redis" if request.param == "fakeredis" else "real_redis"
    value = request.getfixturevalue(fixture)
    assert isinstance(value, Redis)
    return value


@pytest.mark.parametrize("kind", sorted(GARBAGE))
async def test_garbage_is_a_miss_and_is_removed(client: Redis, key_prefix: str, kind: str) -> None:
    backend = RedisApiKeyCacheBackend(client, key_prefix=key_prefix)
    cache_key = "a" * 64
    await GARBAGE[kind](client, backend.redis_key(cache_key))

    assert await backend.get(cache_key) is None
    assert await client.exists(backend.redis_key(cache_key)) == 0


@pytest.mark.parametrize("kind", sorted(GARBAGE))
async def test_garbage_with_ttl_read_is_a_miss_and_is_removed(
    client: Redis, key_prefix: str, kind: str
) -> None:
    """The L1-facing read (value and TTL in one round trip) follows the same rule."""
    backend = RedisApiKeyCacheBackend(client, key_prefix=key_prefix)
    cache_key = "b" * 64
    await GARBAGE[kind](client, backend.redis_key(cache_key))

    assert await backend.get_with_ttl(cache_key) == (None, 0.0)
    assert await client.exists(backend.redis_key(cache_key)) == 0


@pytest.mark.parametrize("kind", sorted(GARBAGE))
async def test_a_key_whose_cache_entry_is_garbage_authenticates_and_is_cached_again(
    client: Redis, key_prefix: str, repository: ControlledRepository, kind: str
) -> None:
    metrics = CacheMetrics()
    backend = RedisApiKeyCacheBackend(client, key_prefix=key_prefix)
    guarded = guard_cache(
        backend, failure_threshold=1, operation_timeout_seconds=5.0, metrics=metrics
    )
    service = ApiKeyService(guarded, repository, metrics=metrics)
    created = await service.create("victim", ["read"])
    redis_key = backend.redis_key(digest(created.plaintext))
    await GARBAGE[kind](client, redis_key)

    admitted = await service.authenticate(created.plaintext)

    assert admitted.prefix == created.record.prefix
    assert repository.digest_lookups == 1
    # Not an outage: the breaker (threshold 1) stayed closed and counted no error.
    assert metrics.cache_errors == 0 and not guarded.is_open
    refilled = await backend.get(digest(created.plaintext))
    assert refilled is not None and refilled.active is True
    await service.authenticate(created.plaintext)
    assert repository.digest_lookups == 1
