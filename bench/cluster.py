"""Part 7: the Redis-backed backends on a local 3-primary Redis Cluster, beside the single Redis.

Two figures per backend (``redis``, ``tiered``), each measured side by side with the same
backend on the run's single ``redis-server``, in the same alternating rounds so the machine's
drift falls on both alike:

- the in-process cost of a cache hit (``ApiKeyService.authenticate``, as part 1 measures it);
- ``GET /v1/me`` throughput and latency of ``game-api serve --workers 2`` under wrk (as part 2),
  one server on each topology, both up throughout, only the one under load doing work.

The cluster is three ``redis-server --cluster-enabled yes`` primaries without replicas on this
machine (``tests.support.redis_cluster``): what a cluster costs the client (slot routing, one
connection pool per node), not what the network between nodes would add.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from bench.backends import BackendUnavailable, open_service, unique_prefix
from bench.hit_cost import seeded_key
from bench.results import SectionResult, fmt_ns, fmt_ratio
from bench.servers import LiveServer, connections_per_worker, server_settings, wait_for_workers
from bench.stats import ratio
from bench.timing import Comparison, async_calls, compare
from bench.wrk import LoadResult, run_wrk
from tests.support.redis_cluster import RedisClusterProcesses

TITLE = "7. Redis Cluster (3 primaries) beside the single Redis: hit cost and /v1/me throughput"
BACKENDS = ("redis", "tiered")
CONNECTIONS = 32
WARMUP_SECONDS = 2.0


@contextmanager
def local_cluster() -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses(primaries=3, replicas_per_primary=0) as cluster:
        yield cluster


def cluster_overrides(cluster: RedisClusterProcesses) -> dict[str, Any]:
    """Settings for a service on ``cluster`` (``Any``: they go to ``open_service``'s overrides)."""
    return {"REDIS_TOPOLOGY": "cluster", "REDIS_CLUSTER_NODES": cluster.seeds}


async def hit_cost_side_by_side(
    backend: str, redis_url: str, cluster: RedisClusterProcesses, calls: int
) -> Comparison:
    """Cluster hits (subject) and single-Redis hits (floor) in the same alternating rounds."""
    async with (
        open_service(backend, redis_url, **cluster_overrides(cluster)) as on_cluster,
        open_service(backend, redis_url) as on_single,
    ):
        cluster_key = await seeded_key(on_cluster)
        single_key = await seeded_key(on_single)

        async def cluster_hit() -> object:
            return await on_cluster.service.authenticate(cluster_key)

        async def single_hit() -> object:
            return await on_single.service.authenticate(single_key)

        return await compare(async_calls(cluster_hit), async_calls(single_hit), calls=calls)


def throughput_side_by_side(
    backend: str, redis_url: str, cluster: RedisClusterProcesses, seconds: float, rounds: int
) -> dict[str, list[LoadResult]]:
    """``/v1/me`` on a server over the cluster and one over the single Redis, round by round."""
    servers = {
        "cluster": LiveServer(
            server_settings(
                backend,
                redis_url,
                unique_prefix(f"cluster-{backend}"),
                APIKEY_CACHE_TTL_SECONDS=3_600,
                **cluster_overrides(cluster),
            ),
            workers=2,
        ),
        "single": LiveServer(
            server_settings(
                backend,
                redis_url,
                unique_prefix(f"single-{backend}"),
                APIKEY_CACHE_TTL_SECONDS=3_600,
            ),
            workers=2,
        ),
    }
    keys = {name: server.create_admin_key() for name, server in servers.items()}
    measured: dict[str, list[LoadResult]] = {name: [] for name in servers}
    with ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)
            wait_for_workers(server)

        def load(name: str, duration: float) -> LoadResult:
            server = servers[name]
            return run_wrk(
                f"http://127.0.0.1:{server.port}/v1/me",
                seconds=duration,
                connections=CONNECTIONS,
                api_key=keys[name],
                spread=lambda: connections_per_worker(server),
            )

        for name in servers:
            load(name, WARMUP_SECONDS)
        for _ in range(rounds):
            for name in servers:
                measured[name].append(load(name, seconds))
    return measured


def _median(results: list[LoadResult], field: str) -> float:
    return float(statistics.median(getattr(result, field) for result in results))


async def run(redis_url: str, calls: int, seconds: float, rounds: int) -> SectionResult:
    section = SectionResult(
        key="cluster",
        title=TITLE,
        method=(
            f"Hit cost: {calls:,} ApiKeyService.authenticate hits per topology after 2,000 "
            "warm-up calls, cluster and single Redis in 10 alternating rounds (as part 1). "
            f"Throughput: GET /v1/me on game-api serve --workers 2 per topology, wrk "
            f"-c{CONNECTIONS}, {rounds} alternating round(s) of {seconds:.0f} s after "
            f"{WARMUP_SECONDS:.0f} s warm-up each, medians over rounds (as part 2). The cluster: "
            "3 local primaries, no replicas."
        ),
        columns=[
            "backend",
            "hit median: cluster",
            "hit median: single",
            "cluster / single",
            "/v1/me rps: cluster",
            "/v1/me rps: single",
            "cluster / single",
            "p99 ms: cluster / single",
        ],
    )
    data: dict[str, Any] = {}
    with local_cluster() as cluster:
        for backend in BACKENDS:
            try:
                hits = await hit_cost_side_by_side(backend, redis_url, cluster, calls)
            except BackendUnavailable as exc:
                section.notes.append(f"{backend}: skipped ({exc}).")
                continue
            loads = throughput_side_by_side(backend, redis_url, cluster, seconds, rounds)
            cluster_rps = _median(loads["cluster"], "rps")
            single_rps = _median(loads["single"], "rps")
            section.rows.append(
                [
                    backend,
                    fmt_ns(hits.subject.median),
                    fmt_ns(hits.floor.median),
                    fmt_ratio(ratio(hits.subject.median, hits.floor.median)),
                    f"{cluster_rps:,.0f}",
                    f"{single_rps:,.0f}",
                    fmt_ratio(ratio(cluster_rps, single_rps)),
                    f"{_median(loads['cluster'], 'p99_ms'):.1f} / "
                    f"{_median(loads['single'], 'p99_ms'):.1f}",
                ]
            )
            data[backend] = {
                "hit_ns": {"cluster": hits.subject.as_dict(), "single": hits.floor.as_dict()},
                "v1_me": {
                    name: [result.as_dict() for result in results]
                    for name, results in loads.items()
                },
            }
    section.data = {"calls": calls, "seconds": seconds, "rounds": rounds, "backends": data}
    section.notes.append(
        "No target: this part shows what the cluster costs beside one server on one machine."
    )
    return section
