"""Benchmark-only routes, present only with ``BENCH_ROUTES``: yardsticks for ``GET /v1/me``.

The benchmark suite serves these beside the real routes and drives them in the same rounds, so
the gap between a yardstick and the route it stands for is the price of exactly what the
yardstick leaves out:

- ``GET /bench/me`` is ``GET /v1/me`` without authentication: the same endpoint signature
  (``request: Request``), the same response model (``MeOut``) and body, for one fixed caller
  built at import. ``/v1/me`` against it is the cost of the key check and nothing else.
- ``GET /bench/me-redis-get`` is the same plus one raw Redis ``GET`` on the container's client:
  the least a request authenticated by a round trip to a shared cache could cost (redis backend).
- ``GET /bench/redis-get`` is one raw Redis ``GET`` behind a dependency, kept for comparison
  with earlier runs.

They read one fixed key under the cache prefix (the benchmark seeds it) and never a real key.
"""

# No ``from __future__ import annotations``: dependency-injector reads the ``Annotated``
# markers from the live signature, and string annotations would hide them.

from typing import Annotated

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, HTTPException, Request

from app.api.schemas import MeOut
from app.clients.redis_client import RedisClient
from app.core.container import Container
from app.services.apikey_service import AuthenticatedKey

router = APIRouter(prefix="/bench", tags=["benchmark"], include_in_schema=False)

RAW_GET_KEY_SUFFIX = "bench-raw-get"
BENCH_CALLER = AuthenticatedKey(prefix="game_BENCHME0", scopes=frozenset({"read"}), expires_at=None)
"""The caller ``/bench/me`` answers for: built once, as if authentication had already run. Its
prefix has a real one's length, and a benchmark's key for ``/v1/me`` is issued with its scopes
(``BENCH_KEY_SCOPES``), so that both routes send bodies of the same size."""
BENCH_KEY_SCOPES = tuple(sorted(BENCH_CALLER.scopes))
"""The scopes of the key a benchmark sends to ``/v1/me`` beside ``/bench/me``."""
_RAW_GET_TARGET_STATE = "bench_raw_get_target"


@inject
def _raw_get_target(
    client: RedisClient | None = Provide[Container.redis_client],
    key_prefix: str = Provide[Container.config.APIKEY_CACHE_REDIS_KEY_PREFIX],
) -> tuple[RedisClient | None, str]:
    return client, key_prefix + RAW_GET_KEY_SUFFIX


async def _raw_get_target_on_the_loop() -> tuple[RedisClient | None, str]:
    """One dependency resolved on the event loop, as the request path resolves its own.

    ``Depends(Provide[...])`` would run each marker through the thread pool, making this
    baseline slower than the route it is the yardstick for.
    """
    return _raw_get_target()


RawGetTarget = Annotated[tuple[RedisClient | None, str], Depends(_raw_get_target_on_the_loop)]


def _raw_get_target_of(request: Request) -> tuple[RedisClient | None, str]:
    """The client and key, looked up once per app and kept on its state.

    ``/v1/me`` reaches its service without solving a dependency; resolving one here would make
    the yardstick dearer than what it measures.
    """
    target: tuple[RedisClient | None, str] | None = getattr(
        request.app.state, _RAW_GET_TARGET_STATE, None
    )
    if target is None:
        target = _raw_get_target()
        setattr(request.app.state, _RAW_GET_TARGET_STATE, target)
    return target


@router.get("/me")
async def bench_me(request: Request) -> MeOut:
    """``/v1/me``'s answer for a fixed caller, without authentication."""
    return MeOut.of(BENCH_CALLER)


@router.get("/redis-get")
async def redis_get(target: RawGetTarget) -> dict[str, bool]:
    client, key = target
    if client is None:
        raise HTTPException(status_code=404, detail="no Redis configured")
    raw = await client.get(key)
    return {"found": raw is not None}


@router.get("/me-redis-get")
async def bench_me_redis_get(request: Request) -> MeOut:
    """``/bench/me`` after one raw Redis ``GET``: a round-trip-per-hit cache at its best."""
    client, key = _raw_get_target_of(request)
    if client is None:
        raise HTTPException(status_code=404, detail="no Redis configured")
    await client.get(key)
    return MeOut.of(BENCH_CALLER)
