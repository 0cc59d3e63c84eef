"""Part 2: end-to-end throughput and latency of the real server, per backend, beside yardsticks.

``game-api serve`` on 127.0.0.1, driven by wrk from another process. Each figure of ours is
measured beside the best that could be done for the same answer, in the same rounds:

- ``GET /v1/me`` beside ``GET /bench/me`` (``BENCH_ROUTES``): the same endpoint signature,
  response model and body for a fixed caller, without authentication, on the same server. The
  ratio is the price of the key check alone. With the redis backend the yardstick is
  ``GET /bench/me-redis-get``, the same route plus one raw Redis ``GET``: what any cache that
  pays one round trip per hit must pay. A yardstick receives the very request ``/v1/me`` does,
  key header included, and does not read the header: the two differ in what is done with the
  request, not in what arrives.
- ``GET /healthz`` beside the same route of a bare FastAPI app (``bench.bare_app``, no
  middleware) under gunicorn with the stock uvicorn worker, same worker count: the price of
  everything our app puts around a trivial route.

Endpoints alternate round by round so that noise from the rest of the machine falls on all of
them alike, in the opposite order every other round so that a drift during a round does too;
both servers are up throughout, and only the one under load does any work. Each ratio is the
median of the per-round ratios, each of an endpoint and its yardstick loaded one after the other:
the machine's speed changes from second to second, and a pair a second apart shares most of it.

On a machine of two or more cores the servers' workers run on one half of the cores and wrk and
Redis on the other (``bench.cores``), so that a ratio measures the servers and not where the
scheduler put them. Each server runs one worker per core it has (``bench.cores.workers_for``:
two workers on one core only race for wrk's connections). Several workers on several cores
still race, and their runs are restarted until each worker holds its share.
"""

from __future__ import annotations

import statistics
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from app.api.bench_routes import BENCH_KEY_SCOPES, RAW_GET_KEY_SUFFIX
from bench.backends import ALL_BACKENDS, backend_exists, unique_prefix
from bench.cores import CoreSplit, applied, workers_for
from bench.redis_keys import delete_prefix, seed
from bench.results import Check, SectionResult, fmt_ratio
from bench.servers import (
    BareAppServer,
    LiveServer,
    Served,
    connections_per_worker,
    server_settings,
    wait_for_workers,
)
from bench.stats import ratio
from bench.wrk import LoadResult, run_wrk

TITLE = "2. End-to-end: GET /v1/me and /healthz beside their yardsticks, per backend"
CONNECTIONS = 32
WARMUP_SECONDS = 2.0
SHARE_TARGET = 0.95

AUTHENTICATED = "/v1/me"
HEALTHZ = "/healthz"
BARE_HEALTHZ = "bare app /healthz"
CEILING_ROUTE = "ceiling route"
ONE_GET_ROUTE = "one-GET route"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One thing to load: on which server, which path, with a key or not, against what."""

    kind: str
    path: str
    bare: bool = False
    sends_key: bool = False
    """The request carries the benchmark's key header (checked by ``/v1/me`` only)."""
    yardstick: str | None = None


ENDPOINTS = {
    BARE_HEALTHZ: Endpoint(BARE_HEALTHZ, "/healthz", bare=True),
    HEALTHZ: Endpoint(HEALTHZ, "/healthz", yardstick=BARE_HEALTHZ),
    CEILING_ROUTE: Endpoint(CEILING_ROUTE, "/bench/me", sends_key=True),
    ONE_GET_ROUTE: Endpoint(ONE_GET_ROUTE, "/bench/me-redis-get", sends_key=True),
}


def endpoints_for(backend: str) -> list[Endpoint]:
    """What each backend is measured on: ``/v1/me`` against its own yardstick."""
    yardstick = ONE_GET_ROUTE if backend == "redis" else CEILING_ROUTE
    return [
        ENDPOINTS[BARE_HEALTHZ],
        ENDPOINTS[HEALTHZ],
        ENDPOINTS[yardstick],
        Endpoint(AUTHENTICATED, "/v1/me", sends_key=True, yardstick=yardstick),
    ]


def _median_of(results: list[LoadResult]) -> dict[str, Any]:
    return {
        "rps": statistics.median(result.rps for result in results),
        "p50_ms": statistics.median(result.p50_ms for result in results),
        "p99_ms": statistics.median(result.p99_ms for result in results),
        "requests": sum(result.requests for result in results),
        "rounds": [result.as_dict() for result in results],
        "connections_per_worker": [list(r.connections_per_worker) for r in results],
    }


def round_order(endpoints: list[Endpoint], round_number: int) -> list[Endpoint]:
    """The endpoints in their order on even rounds, reversed on odd ones: each stays next to its
    yardstick, and neither always goes first."""
    return endpoints if round_number % 2 == 0 else endpoints[::-1]


def measure_backend(
    backend: str,
    redis_url: str,
    seconds: float,
    rounds: int,
    split: CoreSplit | None = None,
    redis_pid: int | None = None,
) -> dict[str, Any]:
    prefix = unique_prefix(f"e2e-{backend}")
    endpoints = endpoints_for(backend)
    settings = server_settings(
        backend, redis_url, prefix, BENCH_ROUTES=True, APIKEY_CACHE_TTL_SECONDS=3_600
    )
    seed(redis_url, prefix + RAW_GET_KEY_SUFFIX, b'{"apiKey":"game_AAAAAAAA","active":true}')
    measured: dict[str, list[LoadResult]] = {endpoint.kind: [] for endpoint in endpoints}
    try:
        workers = workers_for(split)
        server = LiveServer(settings, workers=workers)
        bare = BareAppServer(workers=workers)
        # /bench/me's caller's scopes: both routes answer with a body of the same size.
        api_key = str(server.create_key("bench", list(BENCH_KEY_SCOPES))["key"])
        with ExitStack() as stack:
            start_on = stack.enter_context(applied(split, redis_pid))
            with start_on.serving():
                stack.enter_context(server)
                stack.enter_context(bare)
            for each in (server, bare):
                wait_for_workers(each)

            def target(endpoint: Endpoint) -> Served:
                return bare if endpoint.bare else server

            def load(endpoint: Endpoint, duration: float) -> LoadResult:
                host = target(endpoint)
                return run_wrk(
                    f"http://127.0.0.1:{host.port}{endpoint.path}",
                    seconds=duration,
                    connections=CONNECTIONS,
                    api_key=api_key if endpoint.sends_key else None,
                    spread=lambda: connections_per_worker(host),
                )

            for endpoint in endpoints:
                load(endpoint, WARMUP_SECONDS)
            for round_number in range(rounds):
                for endpoint in round_order(endpoints, round_number):
                    measured[endpoint.kind].append(load(endpoint, seconds))
    finally:
        delete_prefix(redis_url, prefix)
    data: dict[str, Any] = {kind: _median_of(results) for kind, results in measured.items()}
    for endpoint in endpoints:
        figures = data[endpoint.kind]
        figures["path"] = endpoint.path
        figures["against"] = endpoint.yardstick
        # Round by round, each ratio of two runs one after the other.
        figures["round_ratios"] = (
            []
            if endpoint.yardstick is None
            else [
                ratio(ours.rps, theirs.rps)
                for ours, theirs in zip(
                    measured[endpoint.kind], measured[endpoint.yardstick], strict=True
                )
            ]
        )
        figures["ratio"] = (
            None if endpoint.yardstick is None else statistics.median(figures["round_ratios"])
        )
        figures["ratio_of_medians"] = (
            None
            if endpoint.yardstick is None
            else ratio(figures["rps"], data[endpoint.yardstick]["rps"])
        )
    return data


def _spread(ratios: list[float]) -> str:
    """The middle half of the per-round ratios, then the extremes."""
    if not ratios:
        return "-"
    if len(ratios) < 2:
        return f"{ratios[0]:.2f}"
    low, _, high = statistics.quantiles(ratios, n=4)
    return f"{low:.2f} to {high:.2f} ({min(ratios):.2f} to {max(ratios):.2f})"


def checks_for(backends: dict[str, dict[str, Any]]) -> list[Check]:
    checks = []
    for name, data in backends.items():
        yardstick = data[AUTHENTICATED]["against"]
        checks.append(
            Check(
                f"{name}: /v1/me / {yardstick} ({ENDPOINTS[yardstick].path}) throughput",
                data[AUTHENTICATED]["ratio"],
                SHARE_TARGET,
                ">=",
            )
        )
    healthz = [each for data in backends.values() for each in data[HEALTHZ]["round_ratios"]]
    if healthz:
        checks.append(
            Check(
                "/healthz / bare FastAPI app's /healthz throughput (all rounds)",
                statistics.median(healthz),
                SHARE_TARGET,
                ">=",
            )
        )
    return checks


def run(redis_url: str, seconds: float, rounds: int, redis_pid: int | None = None) -> SectionResult:
    """Part 2 of ``make bench``; ``redis_pid``: the benchmark's Redis, moved to wrk's cores."""
    split = CoreSplit.of_this_process()
    section = SectionResult(
        key="throughput",
        title=TITLE,
        method=(
            f"game-api serve --workers {workers_for(split)} on 127.0.0.1 (SQLite, cache TTL "
            "3600 s, BENCH_ROUTES) and, up beside it, a bare FastAPI app (bench/bare_app.py, one "
            "route, no middleware) under gunicorn -k uvicorn_worker.UvicornWorker --workers "
            f"{workers_for(split)}: one worker per core the servers run on. wrk -t1 "
            f"-c{CONNECTIONS} --latency from another process; {rounds} round(s) of "
            f"{seconds:.0f} s per endpoint, endpoints alternating, after a "
            f"{WARMUP_SECONDS:.0f} s warm-up each, in the opposite order every other round. "
            + (
                "No core split (a single core): servers, wrk and Redis share it. "
                if split is None
                else f"Cores: {split.describe()}. "
            )
            + "Requests/s, p50 and p99 are medians over rounds; a ratio is the median of the "
            "per-round ratios of an endpoint and its yardstick, run one after the other. "
            "Yardsticks: /v1/me "
            "against /bench/me (same signature, response model and body, no authentication) "
            "or, for redis, /bench/me-redis-get (the same plus one raw Redis GET), each sent "
            "the same request as /v1/me, key header included; our /healthz against the bare "
            "app's. With several workers, they share one socket and accept "
            "greedily, so wrk's burst of keep-alive connections can land on one worker: a run "
            "in which a worker holds under 35 % of the connections (ss -tnp) is restarted."
        ),
        columns=[
            "backend",
            "endpoint",
            "requests/s",
            "p50",
            "p99",
            "against",
            "ratio (median per round)",
            "per-round ratios: middle half (min to max)",
            "connections per worker",
        ],
    )
    backends: dict[str, dict[str, Any]] = {}
    for backend in ALL_BACKENDS:
        if not backend_exists(backend):
            section.notes.append(f"{backend}: skipped (no such backend in this checkout).")
            continue
        data = measure_backend(backend, redis_url, seconds, rounds, split, redis_pid)
        backends[backend] = data
        for kind, figures in data.items():
            section.rows.append(
                [
                    backend,
                    f"{kind} ({figures['path']})" if kind != AUTHENTICATED else kind,
                    f"{figures['rps']:,.0f}",
                    f"{figures['p50_ms']:.2f} ms",
                    f"{figures['p99_ms']:.2f} ms",
                    figures["against"] or "-",
                    "-" if figures["ratio"] is None else fmt_ratio(figures["ratio"]),
                    _spread(figures["round_ratios"]),
                    ", ".join(
                        "/".join(str(n) for n in split) or "?"
                        for split in figures["connections_per_worker"]
                    ),
                ]
            )
    section.data = {
        "connections": CONNECTIONS,
        "seconds": seconds,
        "workers": workers_for(split),
        "backends": backends,
    }
    section.checks = checks_for(backends)
    return section
