"""``GET /bench/redis-get``: one raw Redis ``GET`` per request, present only with ``BENCH_ROUTES``.

The benchmark suite serves this next to ``GET /v1/me`` with the redis backend: it is what an
authenticated request could cost at best when every hit is one Redis round trip, so the gap
between the two is the price of everything else the key check does. It reads one fixed key under
the cache prefix (the benchmark seeds it) with the same client, pool and dependency injection as
the request path, and returns no data.
"""

# No ``from __future__ import annotations``: dependency-injector reads the ``Annotated``
# markers from the live signature, and string annotations would hide them.

from typing import Annotated

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, HTTPException
from redis.asyncio import Redis

from app.core.container import Container

router = APIRouter(prefix="/bench", tags=["benchmark"], include_in_schema=False)

RAW_GET_KEY_SUFFIX = "bench-raw-get"


@inject
def _raw_get_target(
    client: Redis | None = Provide[Container.redis_client],
    key_prefix: str = Provide[Container.config.APIKEY_CACHE_REDIS_KEY_PREFIX],
) -> tuple[Redis | None, str]:
    return client, key_prefix + RAW_GET_KEY_SUFFIX


async def _raw_get_target_on_the_loop() -> tuple[Redis | None, str]:
    """One dependency resolved on the event loop, as the request path resolves its own.

    ``Depends(Provide[...])`` would run each marker through the thread pool, making this
    baseline slower than the route it is the yardstick for.
    """
    return _raw_get_target()


RawGetTarget = Annotated[tuple[Redis | None, str], Depends(_raw_get_target_on_the_loop)]


@router.get("/redis-get")
async def redis_get(target: RawGetTarget) -> dict[str, bool]:
    client, key = target
    if client is None:
        raise HTTPException(status_code=404, detail="no Redis configured")
    raw = await client.get(key)
    return {"found": raw is not None}
