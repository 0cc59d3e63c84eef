"""Per-request cost of the app in-process, without sockets or a load generator.

``python -m bench.asgi_cost`` calls the ASGI app built by ``create_app`` (memory
backend, in-memory repository, benchmark routes on) directly — ``GET /healthz``, the ceiling
route ``GET /bench/me`` and ``GET /v1/me``, both sent the same key header — beside the bare
FastAPI app's ``/healthz`` (``bench.bare_app``), alternating, and prints the median cost per
request of each. Without a server or a load generator in the way, it shows what the app itself
adds, and it holds still on a busy machine where end-to-end throughput swings. Access lines
are rendered and written as under ``game-api serve`` (to ``/dev/null``); set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory to count metrics in memory-mapped files as
the server's workers do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

from dependency_injector import providers

from app.api.bench_routes import BENCH_KEY_SCOPES
from app.core.log_setup import configure_access_log
from bench.backends import bench_settings
from bench.results import fmt_ns


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
    from bench.bare_app import app as bare_app

    # As ``game-api serve`` writes access lines (its own renderer, batched), into the void.
    configure_access_log(open(os.devnull, "w"), "INFO", "console")  # noqa: SIM115, ASYNC230
    container = build_container(
        bench_settings("memory", "redis://127.0.0.1:1/0", "bench:asgi:", BENCH_ROUTES=True)
    )
    repository = InMemoryApiKeyRepository()
    container.apikey_repository.override(providers.Object(repository))
    container.event_log.override(providers.Object(InMemoryEventLog(repository)))
    key = (await container.apikey_service().create("asgi", list(BENCH_KEY_SCOPES))).plaintext
    app = create_app(container=container)
    if await _request(app, "/v1/me", key) != 200:
        raise RuntimeError("GET /v1/me was refused")
    subjects = {
        "bare /healthz": (bare_app, "/healthz", None),
        "/healthz": (app, "/healthz", None),
        "/bench/me": (app, "/bench/me", key),  # /v1/me's very request, the header unread
        "/v1/me": (app, "/v1/me", key),
    }
    per_path: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(rounds):
        for name, (subject, path, header) in subjects.items():
            start = time.perf_counter_ns()
            for _ in range(requests):
                await _request(subject, path, header)
            per_path[name].append((time.perf_counter_ns() - start) / requests)
    container.unwire()
    return {name: statistics.median(costs) for name, costs in per_path.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    costs = asyncio.run(measure(args.requests, args.rounds))
    print(f"median of {args.rounds} rounds of {args.requests} requests each")
    for name, cost in costs.items():
        print(f"  {name:14s} {fmt_ns(cost)} per request")
    print(
        f"  /healthz costs {costs['/healthz'] / costs['bare /healthz']:.2f}x the bare app's; "
        f"/v1/me {costs['/v1/me'] / costs['/bench/me']:.2f}x the ceiling route's"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
