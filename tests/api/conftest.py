"""An in-process app over a real database (SQLite and PostgreSQL), driven through httpx.

``ASGITransport`` never runs the lifespan, so the fixture closes the container's resources and
unwires it itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.core.container import Container, build_container
from app.core.resources import close_container_resources
from app.domain.keys import digest, generate_api_key
from app.main import create_app
from app.repositories.base import ApiKeyRecord
from app.services.apikey_service import ApiKeyService, CreatedKey
from configs import Settings
from tests.support.db_fixtures import database_url, module_postgres_url  # noqa: F401


@dataclass
class Api:
    """The app under test, its container, and an admin key to drive it."""

    client: httpx.AsyncClient
    container: Container
    admin_key: str

    @property
    def service(self) -> ApiKeyService:
        service: ApiKeyService = self.container.apikey_service()
        return service

    async def create_key(
        self, scopes: list[str], name: str = "player-client", expires_in: int | None = None
    ) -> CreatedKey:
        return await self.service.create(name, scopes, expires_in)

    async def store_key(self, **fields: Any) -> str:
        """Put a key straight into the repository (e.g. one already expired); its plaintext."""
        parsed = generate_api_key()
        record = ApiKeyRecord(
            prefix=parsed.prefix,
            name=fields.pop("name", "stored"),
            scopes=tuple(fields.pop("scopes", ("read",))),
            created_at=fields.pop("created_at", datetime.now(UTC)),
            digest=digest(parsed.plaintext),
            **fields,
        )
        await self.container.apikey_repository().add(record)
        return parsed.plaintext

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"X-API-Key": key if key is not None else self.admin_key}


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api() -> AsyncIterator[ApiFactory]:
    """Build apps from settings; everything built is closed and unwired on teardown."""
    built: list[Api] = []

    async def make(*, create_admin: bool = True, **settings: Any) -> Api:
        container = build_container(Settings(**settings))
        app = create_app(container=container)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
        api = Api(client=client, container=container, admin_key="")
        built.append(api)
        if create_admin:
            api.admin_key = (
                await api.service.create("admin", ["admin", "read", "write"])
            ).plaintext
        return api

    try:
        yield make
    finally:
        for api in built:
            await api.client.aclose()
            await close_container_resources(api.container)
            api.container.unwire()


@pytest.fixture
async def api(make_api: ApiFactory, database_url: str) -> Api:  # noqa: F811
    return await make_api(DATABASE_URL=database_url, APIKEY_CACHE_BACKEND="memory")
