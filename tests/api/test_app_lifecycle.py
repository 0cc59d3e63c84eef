"""The lifespan closes what the container opened.

(That ``create_app`` wires the container without the lifespan is what every other test in this
directory relies on: httpx's ``ASGITransport`` never runs it.)
"""

from __future__ import annotations

from pathlib import Path

import fakeredis
import httpx
from dependency_injector import providers

from app.core.container import build_container
from app.main import create_app
from configs import Settings


class ClosingSpyRedis(fakeredis.FakeAsyncRedis):  # type: ignore[misc]
    aclose_calls = 0

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        type(self).aclose_calls += 1
        await super().aclose(close_connection_pool)


class DisposeSpyEngine:
    dispose_calls = 0

    async def dispose(self) -> None:
        self.dispose_calls += 1


async def test_lifespan_closes_the_redis_client_and_disposes_the_engine(tmp_path: Path) -> None:
    settings = Settings(
        APIKEY_CACHE_BACKEND="redis",
        REDIS_URL="redis://127.0.0.1:1/0",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
    )
    container = build_container(settings)
    redis = ClosingSpyRedis(server=fakeredis.FakeServer())
    engine = DisposeSpyEngine()
    container.redis_client.override(providers.Object(redis))
    container.database_engine.override(providers.Object(engine))
    try:
        app = create_app(container=container)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                assert (await client.get("/healthz")).status_code == 200
            assert ClosingSpyRedis.aclose_calls == 0

        assert ClosingSpyRedis.aclose_calls == 1
        assert engine.dispose_calls == 1
    finally:
        container.unwire()
        container.reset_override()
