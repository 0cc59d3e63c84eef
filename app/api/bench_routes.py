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

RedisClientDep = Annotated[Redis | None, Depends(Provide[Container.redis_client])]
KeyPrefixDep = Annotated[str, Depends(Provide[Container.config.APIKEY_CACHE_REDIS_KEY_PREFIX])]


@router.get("/redis-get")
@inject
async def redis_get(redis_client: RedisClientDep, key_prefix: KeyPrefixDep) -> dict[str, bool]:
    if redis_client is None:
        raise HTTPException(status_code=404, detail="no Redis configured")
    raw = await redis_client.get(key_prefix + RAW_GET_KEY_SUFFIX)
    return {"found": raw is not None}
