"""The real app in process (httpx ``ASGITransport``) with counting wrappers around the real
repository and cache, installed through container overrides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from dependency_injector import providers
from fastapi import FastAPI

from app.core.container import Container, build_container
from app.core.resources import close_container_resources
from app.main import create_app
from app.services.apikey_service import ApiKeyService, CreatedKey
from configs import Settings
from tests.correctness.support import ControlledRepository, CountingCache


@dataclass
class ServedApp:
    app: FastAPI
    client: httpx.AsyncClient
    container: Container
    repository: ControlledRepository
    cache: CountingCache
    admin: CreatedKey

    @property
    def service(self) -> ApiKeyService:
        service: ApiKeyService = self.container.apikey_service()
        return service

    def auth(self, key: CreatedKey | str | None = None) -> dict[str, str]:
        chosen = self.admin if key is None else key
        return {"X-API-Key": chosen if isinstance(chosen, str) else chosen.plaintext}


@asynccontextmanager
async def served_app(*, redis_client: Any = None, **settings: Any) -> AsyncIterator[ServedApp]:
    """An app over ``settings``; ``redis_client`` replaces the container's client when given."""
    container = build_container(Settings(**settings))
    if redis_client is not None:
        container.redis_client.override(providers.Object(redis_client))
    repository = ControlledRepository(container.apikey_repository())
    container.apikey_repository.override(providers.Object(repository))
    cache = CountingCache(container.apikey_cache())
    container.apikey_cache.override(providers.Object(cache))
    app = create_app(container=container)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
    try:
        admin = await container.apikey_service().create("admin", ["admin", "read", "write"])
        yield ServedApp(app, client, container, repository, cache, admin)
    finally:
        await client.aclose()
        if redis_client is None:
            await close_container_resources(container)
        else:  # the test owns the Redis client it passed in
            await container.database_engine().dispose()
        container.unwire()
        container.reset_override()
