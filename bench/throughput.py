"""Part 2: end-to-end throughput and latency of the real server, per backend, beside its ceiling.

``game-api serve --workers 2`` on 127.0.0.1, driven by wrk from another process. For each
backend the same server answers the unauthenticated ``GET /healthz`` (the ceiling: same app,
same workers, no key check) and the authenticated ``GET /v1/me``; with the redis backend also
``GET /bench/redis-get``, one raw Redis GET per request (``BENCH_ROUTES``), the best a
round-trip-per-hit cache could do. Endpoints alternate round by round so that noise from the
rest of the machine falls on all of them alike.
"""

from __future__ import annotations

import statistics
from typing import Any

from app.api.bench_routes import RAW_GET_KEY_SUFFIX
from bench.backends import ALL_BACKENDS, backend_exists, unique_prefix
from bench.redis_keys import delete_prefix, seed
from bench.results import Check, SectionResult, fmt_ratio
from bench.servers import (
    LiveServer,
    connections_per_worker,
    server_settings,
    wait_for_workers,
)
from bench.stats import ratio
from bench.wrk import LoadResult, run_wrk

TITLE = "2. End-to-end: GET /v1/me per backend vs the unauthenticated ceiling"
ENDPOINTS = {"ceiling": "/healthz", "authenticated": "/v1/me", "raw GET": "/bench/redis-get"}
CONNECTIONS = 32
WARMUP_SECONDS = 2.0
SHARE_TARGET = 0.95


def _median_of(results: list[LoadResult]) -> dict[str, Any]:
    return {
        "rps": statistics.median(result.rps for result in results),
        "p50_ms": statistics.median(result.p50_ms for result in results),
        "p99_ms": statistics.median(result.p99_ms for result in results),
        "requests": sum(result.requests for result in results),
        "rounds": [result.as_dict() for result in results],
        "connections_per_worker": [list(r.connections_per_worker) for r in results],
    }


def measure_backend(backend: str, redis_url: str, seconds: float, rounds: int) -> dict[str, Any]:
    prefix = unique_prefix(f"e2e-{backend}")
    kinds = ["ceiling", "authenticated"] + (["raw GET"] if backend == "redis" else [])
    settings = server_settings(
        backend, redis_url, prefix, BENCH_ROUTES=True, APIKEY_CACHE_TTL_SECONDS=3_600
    )
    seed(redis_url, prefix + RAW_GET_KEY_SUFFIX, b'{"apiKey":"game_AAAAAAAA","active":true}')
    try:
        server = LiveServer(settings, workers=2)
        keys = {"authenticated": server.create_admin_key()}
        with server:
            wait_for_workers(server)
            for kind in kinds:
                url = server.base_url + ENDPOINTS[kind]
                run_wrk(url, seconds=WARMUP_SECONDS, api_key=keys.get(kind))
            measured: dict[str, list[LoadResult]] = {kind: [] for kind in kinds}
            for _ in range(rounds):
                for kind in kinds:
                    measured[kind].append(
                        run_wrk(
                            server.base_url + ENDPOINTS[kind],
                            seconds=seconds,
                            connections=CONNECTIONS,
                            api_key=keys.get(kind),
                            spread=lambda: connections_per_worker(server),
                        )
                    )
    finally:
        delete_prefix(redis_url, prefix)
    data = {kind: _median_of(results) for kind, results in measured.items()}
    ceiling = data["ceiling"]["rps"]
    for kind in kinds:
        data[kind]["vs_ceiling"] = ratio(data[kind]["rps"], ceiling)
    return data


def checks_for(backends: dict[str, dict[str, Any]]) -> list[Check]:
    checks = []
    for name in ("memory", "tiered"):
        if name in backends:
            checks.append(
                Check(
                    f"{name}: authenticated / ceiling throughput",
                    backends[name]["authenticated"]["vs_ceiling"],
                    SHARE_TARGET,
                    ">=",
                )
            )
    if "redis" in backends:
        redis = backends["redis"]
        checks.append(
            Check(
                "redis: authenticated / raw-GET endpoint throughput (within 5 %)",
                ratio(redis["authenticated"]["rps"], redis["raw GET"]["rps"]),
                SHARE_TARGET,
                ">=",
            )
        )
    if "tiered" in backends and "memory" in backends:
        checks.append(
            Check(
                "tiered: share of ceiling / memory's share of ceiling",
                ratio(
                    backends["tiered"]["authenticated"]["vs_ceiling"],
                    backends["memory"]["authenticated"]["vs_ceiling"],
                ),
                SHARE_TARGET,
                ">=",
            )
        )
    return checks


def run(redis_url: str, seconds: float, rounds: int) -> SectionResult:
    section = SectionResult(
        key="throughput",
        title=TITLE,
        method=(
            f"game-api serve --workers 2 on 127.0.0.1 (SQLite, cache TTL 3600 s), wrk -t1 "
            f"-c{CONNECTIONS} --latency from another process; {rounds} round(s) of {seconds:.0f} s "
            f"per endpoint, endpoints alternating, after a {WARMUP_SECONDS:.0f} s warm-up each; "
            "medians over rounds. The ceiling is GET /healthz on the same server. The workers "
            "share one socket and accept greedily, so wrk's burst of keep-alive connections can "
            "land on one worker: a run in which a worker holds under 35 % of the connections "
            "(ss -tnp) is restarted."
        ),
        columns=[
            "backend",
            "endpoint",
            "requests/s",
            "p50",
            "p99",
            "share of ceiling",
            "connections per worker",
        ],
    )
    backends: dict[str, dict[str, Any]] = {}
    for backend in ALL_BACKENDS:
        if not backend_exists(backend):
            section.notes.append(f"{backend}: skipped (no such backend in this checkout).")
            continue
        data = measure_backend(backend, redis_url, seconds, rounds)
        backends[backend] = data
        for kind, figures in data.items():
            section.rows.append(
                [
                    backend,
                    f"{kind} ({ENDPOINTS[kind]})",
                    f"{figures['rps']:,.0f}",
                    f"{figures['p50_ms']:.2f} ms",
                    f"{figures['p99_ms']:.2f} ms",
                    fmt_ratio(figures["vs_ceiling"]),
                    ", ".join(
                        "/".join(str(n) for n in split) or "?"
                        for split in figures["connections_per_worker"]
                    ),
                ]
            )
    section.data = {"connections": CONNECTIONS, "seconds": seconds, "backends": backends}
    section.checks = checks_for(backends)
    return section
