"""``GET /bench/redis-get`` exists only with ``BENCH_ROUTES`` and does one raw Redis GET."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import httpx
import pytest
from dependency_injector import providers

from app.api.bench_routes import RAW_GET_KEY_SUFFIX
from app.core.container import Container, build_container
from app.main import create_app
from app.repositories.memory import InMemoryApiKeyRepository, InMemoryEventLog
from configs import Settings


def _container(fake_redis: fakeredis.FakeAsyncRedis, bench_routes: bool) -> Container:
    settings = Settings(
        _env_file=None,
        APIKEY_CACHE_BACKEND="redis",
        REDIS_URL="redis://127.0.0.1:1/0",
        APIKEY_CACHE_REDIS_KEY_PREFIX="bench-test:",
        BENCH_ROUTES=bench_routes,
    )
    container = build_container(settings)
    container.redis_client.override(providers.Object(fake_redis))
    repository = InMemoryApiKeyRepository()
    container.apikey_repository.override(providers.Object(repository))
    container.event_log.override(providers.Object(InMemoryEventLog(repository)))
    return container


@pytest.fixture
async def fake() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    try:
        yield client
    finally:
        await client.aclose()


async def _get(container: Container, path: str) -> httpx.Response:
    app = create_app(container=container)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            return await client.get(path)
    finally:
        container.unwire()


async def test_route_absent_by_default(fake: fakeredis.FakeAsyncRedis) -> None:
    response = await _get(_container(fake, bench_routes=False), "/bench/redis-get")
    assert response.status_code == 404


async def test_route_reads_the_fixed_key_under_the_prefix(
    fake: fakeredis.FakeAsyncRedis,
) -> None:
    container = _container(fake, bench_routes=True)
    assert (await _get(container, "/bench/redis-get")).json() == {"found": False}

    await fake.set("bench-test:" + RAW_GET_KEY_SUFFIX, b'{"apiKey":"game_AAAAAAAA","active":true}')
    response = await _get(_container(fake, bench_routes=True), "/bench/redis-get")
    assert response.status_code == 200
    assert response.json() == {"found": True}


async def test_route_is_not_in_the_openapi_document(fake: fakeredis.FakeAsyncRedis) -> None:
    response = await _get(_container(fake, bench_routes=True), "/openapi.json")
    assert "/bench/redis-get" not in response.json()["paths"]


async def test_route_resolves_its_dependency_on_the_event_loop(
    fake: fakeredis.FakeAsyncRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread-pool hop per request would make this yardstick slower than what it measures."""
    import fastapi.dependencies.utils as dependency_utils

    offloaded: list[object] = []
    run_in_threadpool = dependency_utils.run_in_threadpool  # type: ignore[attr-defined]

    async def spy(function: object, *args: object, **kwargs: object) -> object:
        offloaded.append(function)
        return await run_in_threadpool(function, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dependency_utils, "run_in_threadpool", spy)

    response = await _get(_container(fake, bench_routes=True), "/bench/redis-get")

    assert response.status_code == 200
    assert offloaded == []


async def test_bench_me_answers_like_v1_me_without_a_key(fake: fakeredis.FakeAsyncRedis) -> None:
    """The ceiling route: /v1/me's response model and body shape, for the fixed caller."""
    from app.api.bench_routes import BENCH_CALLER

    response = await _get(_container(fake, bench_routes=True), "/bench/me")

    assert response.status_code == 200
    assert response.json() == {
        "prefix": BENCH_CALLER.prefix,
        "scopes": sorted(BENCH_CALLER.scopes),
        "expires_at": None,
    }


async def test_bench_me_answers_a_body_of_the_size_v1_me_answers_a_benchmark_key(
    fake: fakeredis.FakeAsyncRedis,
) -> None:
    """The yardstick's body is /v1/me's but for the prefix's letters: same fields, same scopes,
    same length, for the key a benchmark issues (``BENCH_KEY_SCOPES``)."""
    from app.api.bench_routes import BENCH_KEY_SCOPES

    container = _container(fake, bench_routes=True)
    created = await container.apikey_service().create("bench", list(BENCH_KEY_SCOPES))
    app = create_app(container=container)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            ceiling = await client.get("/bench/me")
            me = await client.get("/v1/me", headers={"X-API-Key": created.plaintext})
    finally:
        container.unwire()

    assert (ceiling.status_code, me.status_code) == (200, 200)
    assert {**ceiling.json(), "prefix": None} == {**me.json(), "prefix": None}
    assert len(ceiling.content) == len(me.content)


async def test_bench_me_has_the_signature_of_v1_me() -> None:
    """Same endpoint signature and return annotation, so FastAPI does the same work for both."""
    import inspect

    from app.api.bench_routes import bench_me, bench_me_redis_get
    from app.api.me import read_me

    expected = inspect.signature(read_me, eval_str=True)
    assert inspect.signature(bench_me, eval_str=True) == expected
    assert inspect.signature(bench_me_redis_get, eval_str=True) == expected


async def test_bench_me_redis_get_does_one_raw_get_of_the_fixed_key(
    fake: fakeredis.FakeAsyncRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    gets: list[object] = []
    real_get = fake.get

    async def counting_get(name: object) -> object:
        gets.append(name)
        return await real_get(name)  # type: ignore[arg-type]

    monkeypatch.setattr(fake, "get", counting_get)

    first = await _get(_container(fake, bench_routes=True), "/bench/me")
    assert first.status_code == 200 and gets == []

    response = await _get(_container(fake, bench_routes=True), "/bench/me-redis-get")

    assert response.status_code == 200
    assert response.json()["prefix"] == first.json()["prefix"]
    assert gets == ["bench-test:" + RAW_GET_KEY_SUFFIX]


async def test_new_routes_absent_by_default(fake: fakeredis.FakeAsyncRedis) -> None:
    for path in ("/bench/me", "/bench/me-redis-get"):
        response = await _get(_container(fake, bench_routes=False), path)
        assert response.status_code == 404
