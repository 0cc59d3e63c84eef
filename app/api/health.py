"""Liveness and readiness, in the form load balancers and orchestrators follow.

``/livez`` (and its older name ``/healthz``) is deliberately trivial (no I/O, no auth): the
process runs its event loop, nothing more. A liveness probe that touched the database would get
every worker restarted during a database outage, which cures nothing. ``/healthz`` is also the
throughput ceiling the request-path benchmarks compare against.

``/readyz`` answers "can this worker authenticate?", and that needs the database: 200 when it
answers, 503 when it does not. That holds even when the cache is warm: cached keys would still
be admitted, but every new key, every cache miss and every key-management call would fail, so
a balancer should prefer a worker that has its database. Redis is never a readiness condition:
with Redis down the ``redis`` and ``tiered`` backends fall back to the database and valid keys
keep working, so the answer is 200 with ``"status": "degraded"`` and the check named, rather
than a 503 that would take every worker out of rotation at once for a cache outage.
"""

# No ``from __future__ import annotations``: dependency-injector reads the ``Annotated``
# markers from the live signature, and string annotations would hide them.

import asyncio
from typing import Annotated, Any

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.api.deps import ApiKeyServiceDep
from app.clients.redis_client import RedisClient, ping_primaries
from app.core.container import Container
from app.core.runtime_info import backend_in_effect
from app.domain.errors import RepositoryUnavailable
from app.services.apikey_service import ApiKeyService
from app.services.metrics import CacheMetrics
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend

router = APIRouter(tags=["health"])

READINESS_TIMEOUT_SECONDS = 1.0

RedisClientDep = Annotated[RedisClient | None, Depends(Provide[Container.redis_client])]
BackendNameDep = Annotated[str, Depends(Provide[Container.config.APIKEY_CACHE_BACKEND])]
MetricsDep = Annotated[CacheMetrics, Depends(Provide[Container.metrics])]


@router.get("/livez")
@router.get("/healthz")
async def livez() -> dict[str, str]:
    """200 whenever the process can answer at all: no I/O, no authentication."""
    return {"status": "ok"}


async def _database_status(service: ApiKeyService) -> str:
    try:
        await service.check_repository()
    except RepositoryUnavailable:
        return "unavailable"
    return "ok"


async def _redis_status(client: RedisClient | None, backend_name: str) -> str:
    if backend_name == "memory" or client is None:
        return "not used"
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            await ping_primaries(client)
    except Exception:
        return "unavailable"
    return "ok"


async def _listener_status(service: ApiKeyService) -> dict[str, Any] | None:
    """The tiered backend's invalidation listener, reported but not a readiness condition.

    Without it the worker stays correct (its L1 is bypassed and Redis answers), only slower; an
    operator still wants to see it, and how often it had to re-subscribe (each flushed the L1).
    """
    cache = service.cache
    if not isinstance(cache, TieredApiKeyCacheBackend):
        return None
    subscribed = await cache.listener.wait_healthy(READINESS_TIMEOUT_SECONDS)
    return {
        "state": "subscribed" if subscribed else "not subscribed: L1 bypassed",
        "subscriptions": cache.listener.subscriptions,
    }


@router.get("/readyz", responses={503: {"description": "The key database is unreachable"}})
@inject
async def readyz(
    service: ApiKeyServiceDep,
    redis_client: RedisClientDep,
    backend_name: BackendNameDep,
    metrics: MetricsDep,
    request: Request,
) -> JSONResponse:
    checks = {
        "database": await _database_status(service),
        "redis": await _redis_status(redis_client, backend_name),
    }
    ready = checks["database"] == "ok"
    if not ready:
        status = "unavailable"
    elif checks["redis"] == "unavailable":
        status = "degraded"
    else:
        status = "ready"
    body: dict[str, Any] = {
        "status": status,
        "checks": checks,
        # What is in effect, not what was asked for: "memory (fallback: ...)" says so.
        "cache_backend": backend_in_effect(request.app.state.container),
        "cache_metrics": metrics.snapshot(),
    }
    listener = await _listener_status(service)
    if listener is not None:
        body["invalidation_listener"] = listener
    return JSONResponse(body, status_code=200 if ready else 503)
