"""Factories for every cache backend variant the contract suite runs against.

Each factory returns a backend built on the test's own clients and key prefix. Adding a backend
(or a variant of one) to ``BACKEND_FACTORIES`` runs the whole contract suite against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend, RedisApiKeyCacheBackend
from app.services.cache_protocol import CoherentCacheBackend


@dataclass
class BackendContext:
    """What a factory may use: the test's request (for fixtures) and its unique key prefix."""

    request: pytest.FixtureRequest
    key_prefix: str

    def fixture(self, name: str) -> object:
        return self.request.getfixturevalue(name)


BackendFactory = Callable[[BackendContext], CoherentCacheBackend]


def memory_backend(context: BackendContext) -> CoherentCacheBackend:
    return InMemoryApiKeyCacheBackend()


def fakeredis_backend(context: BackendContext) -> CoherentCacheBackend:
    client = context.fixture("fake_redis")
    assert isinstance(client, Redis)
    return RedisApiKeyCacheBackend(client, key_prefix=context.key_prefix)


def real_redis_backend(context: BackendContext) -> CoherentCacheBackend:
    client = context.fixture("real_redis")
    assert isinstance(client, Redis)
    return RedisApiKeyCacheBackend(client, key_prefix=context.key_prefix)


def real_redis_cluster_backend(context: BackendContext) -> CoherentCacheBackend:
    client = context.fixture("real_redis_cluster")
    assert isinstance(client, RedisCluster)
    return RedisApiKeyCacheBackend(client, key_prefix=context.key_prefix)


CONTRACT_CALL_DEADLINE_SECONDS = 5.0
"""The tiered backends' per-call deadline in the contract suite, as the plain Redis client's
socket timeout there. The contract is what a healthy Redis gives; with the production deadline
(0.25 s) a first call that opens its connection on a loaded CI machine can be cut, and the
backend then answers as in an outage (a miss), which the fault tests cover on their own."""


def tiered_backend_on(client_fixture: str) -> BackendFactory:
    """The tiered backend on the client of ``client_fixture``, its listener stopped at teardown."""

    def factory(context: BackendContext) -> CoherentCacheBackend:
        client = context.fixture(client_fixture)
        assert isinstance(client, Redis | RedisCluster)
        make = context.fixture("tiered_factory")
        assert callable(make)
        backend: CoherentCacheBackend = make(
            client, context.key_prefix, operation_timeout_seconds=CONTRACT_CALL_DEADLINE_SECONDS
        )
        return backend

    return factory


BACKEND_FACTORIES: dict[str, BackendFactory] = {
    "memory": memory_backend,
    "fakeredis": fakeredis_backend,
    "redis": real_redis_backend,
    "tiered-fakeredis": tiered_backend_on("fake_redis"),
    "tiered-redis": tiered_backend_on("real_redis"),
    "redis-cluster": real_redis_cluster_backend,
    "tiered-redis-cluster": tiered_backend_on("real_redis_cluster"),
}

# Variants that start servers of their own (a six-process cluster) are slow tests.
_ON_A_CLUSTER = (pytest.mark.slow, pytest.mark.redis_server)
BACKEND_MARKS: dict[str, tuple[pytest.MarkDecorator, ...]] = {
    "redis-cluster": _ON_A_CLUSTER,
    "tiered-redis-cluster": _ON_A_CLUSTER,
}


def backend_params() -> list[object]:
    """``BACKEND_FACTORIES`` as pytest params, each with its marks."""
    return [
        pytest.param(name, marks=BACKEND_MARKS.get(name, ())) for name in sorted(BACKEND_FACTORIES)
    ]
