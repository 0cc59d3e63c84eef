"""The real ``ApiKeyService`` for each backend, built by the project's own container.

Going through ``build_container`` means the benchmark measures what a deploy runs (the Redis
backend behind its circuit breaker, the tiered backend with its listener), not a hand-made copy.
Only the repository and its event log are swapped for the in-memory ones, so that no SQL is
ever timed; the service still follows that log and holds a lease, as a deployed one does (without
a log it could not trust its local copies, and every hit would go to the repository).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from dependency_injector import providers
from redis.asyncio import Redis

from app.core.container import Container, build_container
from app.core.resources import close_container_resources
from app.repositories.base import ApiKeyRepository
from app.repositories.memory import InMemoryApiKeyRepository, InMemoryEventLog
from app.services.apikey_service import ApiKeyService
from configs import Settings

ALL_BACKENDS = ("memory", "redis", "tiered")
BENCH_CACHE_TTL_SECONDS = 3_600
"""Long enough that no entry expires in the middle of a measurement and turns a hit into a miss."""
# Signs the key records the Redis-backed backends keep; a benchmark-only value.
BENCH_HMAC_SECRET = "bench-only-record-signing-secret"


class BackendUnavailable(Exception):
    """This checkout has no such backend yet; the part is reported as skipped, not failed."""


def unique_prefix(label: str) -> str:
    return f"bench:{label}:{uuid.uuid4().hex[:10]}:"


def backend_exists(name: str) -> bool:
    selector = Container.apikey_cache
    return name in selector.providers


def bench_settings(backend: str, redis_url: str, key_prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "APIKEY_CACHE_BACKEND": backend,
        "REDIS_URL": redis_url,
        "APIKEY_CACHE_REDIS_KEY_PREFIX": key_prefix,
        "APIKEY_CACHE_TTL_SECONDS": BENCH_CACHE_TTL_SECONDS,
        "APIKEY_CACHE_L1_TTL_SECONDS": BENCH_CACHE_TTL_SECONDS,
        "LOG_LEVEL": "WARNING",
        "APIKEY_CACHE_HMAC_SECRET": BENCH_HMAC_SECRET,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass(frozen=True, slots=True)
class BenchService:
    backend: str
    service: ApiKeyService
    container: Container
    key_prefix: str

    def redis_client(self) -> Redis:
        client: Redis | None = self.container.redis_client()
        if client is None:
            raise RuntimeError("no Redis client configured")
        return client


@asynccontextmanager
async def open_service(
    backend: str,
    redis_url: str,
    *,
    key_prefix: str | None = None,
    repository: ApiKeyRepository | None = None,
    **overrides: Any,
) -> AsyncIterator[BenchService]:
    """The service for ``backend`` on ``redis_url``; its Redis keys are removed on exit, and its
    resources closed the way the app's lifespan closes them."""
    if not backend_exists(backend):
        raise BackendUnavailable(f"the {backend!r} backend does not exist in this checkout")
    prefix = key_prefix if key_prefix is not None else unique_prefix(backend)
    container = build_container(bench_settings(backend, redis_url, prefix, **overrides))
    chosen = repository if repository is not None else InMemoryApiKeyRepository()
    container.apikey_repository.override(providers.Object(chosen))
    # The event log beside the keys it logs: the hit path then pays for its lease check as a
    # served worker does.
    keys = getattr(chosen, "inner", chosen)
    if isinstance(keys, InMemoryApiKeyRepository):
        container.event_log.override(providers.Object(InMemoryEventLog(keys)))
    bench = BenchService(backend, container.apikey_service(), container, prefix)
    try:
        await bench.service.start()
        yield bench
    finally:
        try:
            await bench.service.clear_cache()
        finally:
            await close_container_resources(container)
