"""Closing what a container opened, shared by the app's lifespan and the command line."""

from __future__ import annotations

from app.core.container import Container
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend


async def close_container_resources(container: Container) -> None:
    """Stop the tiered cache's listener, close the Redis client (``aclose``; ``close`` is
    deprecated) and dispose the engine.

    Both were created lazily, so asking for them here opens no connection.
    """
    await container.apikey_service().aclose()  # leave the members before the engine goes
    cache = container.apikey_cache()
    if isinstance(cache, TieredApiKeyCacheBackend):
        await cache.aclose()  # its invalidation listener, before the client it listens on
    redis_client = container.redis_client()
    if redis_client is not None:
        await redis_client.aclose()
    await container.database_engine().dispose()
