"""Per-request cost of the app in-process, without sockets or a load generator.

``python -m bench.asgi_cost [--async-markers]`` calls the ASGI app built by ``create_app`` (memory
backend, in-memory repository) directly, for ``GET /healthz`` and ``GET /v1/me``, alternating,
and prints the median cost per request. ``--async-markers`` is an experiment, not a fix: it makes
dependency-injector's ``Provide[...]`` marker an async callable before the app is built, so
FastAPI awaits it instead of sending it to the thread pool, which isolates what that hop costs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from dependency_injector import providers

from bench.backends import bench_settings
from bench.results import fmt_ns


def make_markers_async() -> None:
    import dependency_injector.wiring as wiring

    async def resolve_marker(self: Any) -> Any:
        return self

    wiring._Marker.__call__ = resolve_marker  # type: ignore[assignment,method-assign]


async def _request(app: Any, path: str, key: str | None) -> int:
    headers = [(b"host", b"bench")]
    if key is not None:
        headers.append((b"x-api-key", key.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(scope, receive, send)
    return status


async def measure(requests: int, rounds: int) -> dict[str, float]:
    from app.core.container import build_container
    from app.main import create_app
    from app.repositories.memory import InMemoryApiKeyRepository, InMemoryEventLog

    container = build_container(bench_settings("memory", "redis://127.0.0.1:1/0", "bench:asgi:"))
    repository = InMemoryApiKeyRepository()
    container.apikey_repository.override(providers.Object(repository))
    container.event_log.override(providers.Object(InMemoryEventLog(repository)))
    key = (await container.apikey_service().create("asgi", ["admin"])).plaintext
    app = create_app(container=container)
    if await _request(app, "/v1/me", key) != 200:
        raise RuntimeError("GET /v1/me was refused")
    per_path: dict[str, list[float]] = {"/healthz": [], "/v1/me": []}
    for _ in range(rounds):
        for path, header in (("/healthz", None), ("/v1/me", key)):
            start = time.perf_counter_ns()
            for _ in range(requests):
                await _request(app, path, header)
            per_path[path].append((time.perf_counter_ns() - start) / requests)
    container.unwire()
    return {path: statistics.median(costs) for path, costs in per_path.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_cost", description=__doc__)
    parser.add_argument("--async-markers", action="store_true")
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.async_markers:
        make_markers_async()
    costs = asyncio.run(measure(args.requests, args.rounds))
    label = "async markers (experiment)" if args.async_markers else "as shipped"
    ceiling, me = costs["/healthz"], costs["/v1/me"]
    print(
        f"{label}: /healthz {fmt_ns(ceiling)}, /v1/me {fmt_ns(me)} per request "
        f"(median of {args.rounds} rounds of {args.requests}); /v1/me costs {me / ceiling:.2f}x "
        f"the ceiling, throughput share {ceiling / me:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
