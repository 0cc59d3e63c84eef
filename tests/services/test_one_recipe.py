"""``build_apikey_cache_backend`` and the container build the same object graph per backend.

Both go through ``app.services.cache_factories``; this walks what each built — every
collaborator's class and every numeric setting, recursively — and compares the two, so a
breaker, metrics or a listener present in one and missing in the other fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from app.core.container import Container
from app.services.apikey_cache_backend import build_apikey_cache_backend
from app.services.guarded_cache_backend import CircuitBreakingCacheBackend
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend
from tests.support.containers import make_container

REDIS_URL = "redis://127.0.0.1:6390/0"  # never contacted: nothing here does I/O


def graph(value: Any, seen: set[int] | None = None) -> Any:
    """The shape of an object graph: classes and numbers, not identities or random ids."""
    seen = set() if seen is None else seen
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str | bytes):
        return type(value).__name__
    if isinstance(value, Redis):
        return "Redis"
    if id(value) in seen:
        return f"<cycle {type(value).__name__}>"
    module = type(value).__module__
    if callable(value) and not module.startswith("app."):
        owner = getattr(value, "__self__", None)
        name = getattr(value, "__qualname__", type(value).__name__)
        return f"callable {name}" + (f" of {type(owner).__name__}" if owner is not None else "")
    if isinstance(value, dict):
        return {str(key): graph(item, seen) for key, item in sorted(value.items(), key=str)}
    if isinstance(value, list | tuple | set | frozenset):
        return [graph(item, seen) for item in value]
    if not module.startswith("app."):
        return type(value).__name__
    seen.add(id(value))
    fields: dict[str, Any] = {}
    names = list(getattr(value, "__dict__", {}))
    for klass in type(value).__mro__:
        names.extend(getattr(klass, "__slots__", ()))
    for name in sorted(set(names)):
        if hasattr(value, name):
            fields[name] = graph(getattr(value, name), seen)
    return {type(value).__name__: fields}


@pytest.mark.parametrize("backend_name", ["memory", "redis", "tiered"])
async def test_builder_and_container_build_equal_graphs(
    backend_name: str, containers: list[Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIKEY_CACHE_BACKEND", backend_name)
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    container = make_container(containers, None)

    from_container = container.apikey_cache()
    from_builder = build_apikey_cache_backend(backend_name, REDIS_URL, "game:apikey:")
    try:
        assert graph(from_builder) == graph(from_container)
    finally:
        if isinstance(from_builder, TieredApiKeyCacheBackend):
            await from_builder.aclose()
            await from_builder.shared.inner.client.aclose()  # type: ignore[attr-defined]
        elif isinstance(from_builder, CircuitBreakingCacheBackend):
            await from_builder.inner.client.aclose()  # type: ignore[attr-defined]
        if isinstance(from_container, TieredApiKeyCacheBackend):
            await from_container.aclose()
        client = container.redis_client()
        if client is not None:
            await client.aclose()


def test_the_tiered_graph_has_its_breaker_metrics_and_listener() -> None:
    """The comparison above is only as good as the walk: it must see every collaborator."""
    shape = graph(build_apikey_cache_backend("tiered", REDIS_URL))
    text = repr(shape)
    for collaborator in (
        "CircuitBreakingCacheBackend",
        "CircuitBreaker",
        "CacheMetrics",
        "RedisApiKeyCacheBackend",
        "LocalTier",
        "InvalidationListener",
    ):
        assert collaborator in text
