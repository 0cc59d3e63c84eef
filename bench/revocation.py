"""Part 3: a revocation is final when it returns, per backend, healthy and with a host partitioned.

Two hosts (``game-api serve --workers 2`` each) share one PostgreSQL database and one Redis, each
reaching Redis through a TCP proxy of its own (``tests.support.multihost``). Each trial creates a
key on host A, uses it until every worker of both hosts has admitted it (so every worker that
keeps copies per process holds it), revokes it on host A, and from the moment revoke returned
sends requests to both hosts on fresh connections until every worker has refused it. Workers are
told apart by ``X-Worker-Id``.

Healthy trials run first; then host B's Redis link is cut (every connection reset, new ones
refused) for the partitioned trials, whose keys were cached by every worker before the cut, so
host B holds stale copies it can no longer hear about through Redis.

Figures per backend and case: requests admitted after revoke returned (target 0), revoke
latency (target p50 ≤ 50 ms healthy for redis and tiered; worst ≤ lease + one poll in all
cases) and how the answer says finality was reached (``finality.how``). The lease is lowered
from its default of 10 s so that a partitioned trial costs seconds, not tens of seconds.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.backends import ALL_BACKENDS, backend_exists
from bench.results import Check, SectionResult
from bench.stats import Distribution
from tests.support.live_server import WORKER_ID_HEADER
from tests.support.multihost import Cluster, Host, create_key_over_http, running_cluster

TITLE = "3. Revocation: final when it returns, healthy and with host B cut from Redis"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
LEASE_SECONDS = 3.0
POLL_MS = 1_000
CACHE_TTL_SECONDS = 600
"""Longer than any series of trials: a stale admit then shows a missed revocation, never an
entry that happened to expire."""
HEALTHY_P50_TARGET_MS = 50.0
WORST_TARGET_MS = (LEASE_SECONDS + POLL_MS / 1_000) * 1_000
BATCH = 4
MIN_REQUESTS_AFTER_REVOKE = 20
PROBE_DEADLINE_S = LEASE_SECONDS + 5.0
REVOKE_TIMEOUT_S = 30.0
CASES = ("healthy", "B cut from Redis")
VICTIM_SCOPES = ("admin",)
"""The cluster's admin key may grant only what it holds; /v1/me admits any valid key."""


@dataclass(slots=True)
class Trial:
    revoke_ms: float = float("nan")
    status: int = 0
    how: str = "?"
    final: bool = False
    admitted_after_revoke: int = 0
    requests_after_revoke: int = 0
    all_refuse_ms: float = float("nan")
    request_ms: list[float] = field(default_factory=list)


class TrialError(Exception):
    pass


def fresh_connection_client() -> httpx.AsyncClient:
    """Every request on a new connection, so the kernel spreads them over the workers."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_keepalive_connections=0, max_connections=BATCH * 8),
        headers={"Connection": "close"},
        timeout=10.0,
    )


async def _batch(
    client: httpx.AsyncClient, hosts: list[Host], key: str
) -> list[tuple[int, str, float, float]]:
    """``BATCH`` concurrent GET /v1/me per host: (status, host:worker, answered at, ms)."""

    async def one(host: Host) -> tuple[int, str, float, float]:
        start = time.perf_counter()
        response = await client.get(host.server.base_url + "/v1/me", headers={"X-API-Key": key})
        end = time.perf_counter()
        worker = f"{host.name}:{response.headers.get(WORKER_ID_HEADER, '?')}"
        return response.status_code, worker, end, (end - start) * 1_000

    return list(await asyncio.gather(*(one(host) for host in hosts for _ in range(BATCH))))


async def warm(client: httpx.AsyncClient, hosts: list[Host], key: str, workers: set[str]) -> None:
    """Until every worker of every host has admitted ``key`` (and so holds it)."""
    admitted: set[str] = set()
    deadline = time.perf_counter() + 20.0
    while admitted != workers:
        if time.perf_counter() > deadline:
            raise TrialError(f"only {sorted(admitted)} of {sorted(workers)} admitted the key")
        admitted |= {w for status, w, _, _ in await _batch(client, hosts, key) if status == 200}


async def revoke_and_probe(
    client: httpx.AsyncClient, hosts: list[Host], key: str, prefix: str, workers: set[str]
) -> Trial:
    a = hosts[0]
    started = time.perf_counter()
    revoked = await client.post(
        f"{a.server.base_url}/v1/keys/{prefix}/revoke",
        headers={"X-API-Key": a.admin_key},
        timeout=REVOKE_TIMEOUT_S,
    )
    returned_at = time.perf_counter()
    finality = revoked.json().get("finality") or {} if revoked.status_code == 200 else {}
    trial = Trial(
        revoke_ms=(returned_at - started) * 1_000,
        status=revoked.status_code,
        how=str(finality.get("how", f"HTTP {revoked.status_code}")),
        final=bool(finality.get("final")),
    )
    first_refusal: dict[str, float] = {}
    give_up_at = returned_at + PROBE_DEADLINE_S
    while set(first_refusal) != workers or trial.requests_after_revoke < MIN_REQUESTS_AFTER_REVOKE:
        if time.perf_counter() > give_up_at:
            return trial  # all_refuse_ms stays NaN: not every worker refused in time
        for status, worker, answered_at, round_trip_ms in await _batch(client, hosts, key):
            trial.requests_after_revoke += 1
            trial.request_ms.append(round_trip_ms)
            if status == 200:
                trial.admitted_after_revoke += 1
            elif status == 401:
                first_refusal.setdefault(worker, answered_at)
            else:
                raise TrialError(f"unexpected status {status} from {worker} after revoke")
    trial.all_refuse_ms = (max(first_refusal.values()) - returned_at) * 1_000
    return trial


def _workers(hosts: list[Host]) -> set[str]:
    return {f"{host.name}:{pid}" for host in hosts for pid in host.worker_pids()}


async def run_cases(hosts: list[Host], healthy: int, partitioned: int) -> dict[str, list[Trial]]:
    a, b = hosts
    workers = _workers(hosts)
    results: dict[str, list[Trial]] = {case: [] for case in CASES}
    async with fresh_connection_client() as client:
        for _ in range(healthy):
            victim = create_key_over_http(a, "revocation-trial", VICTIM_SCOPES)
            await warm(client, hosts, victim.key, workers)
            results["healthy"].append(
                await revoke_and_probe(client, hosts, victim.key, victim.prefix, workers)
            )
        # Every victim cached on every worker before the cut: host B keeps stale copies.
        victims = [
            create_key_over_http(a, "partitioned-trial", VICTIM_SCOPES) for _ in range(partitioned)
        ]
        for victim in victims:
            await warm(client, hosts, victim.key, workers)
        b.redis_link.cut()
        try:
            for victim in victims:
                results["B cut from Redis"].append(
                    await revoke_and_probe(client, hosts, victim.key, victim.prefix, workers)
                )
        finally:
            b.redis_link.heal()
    return results


def summarise(backend: str, case: str, trials: list[Trial]) -> dict[str, Any]:
    finished = [t.all_refuse_ms for t in trials if t.all_refuse_ms == t.all_refuse_ms]
    revoke_ms = [t.revoke_ms for t in trials if t.status == 200]
    round_trips = [ms for t in trials for ms in t.request_ms]
    return {
        "backend": backend,
        "case": case,
        "trials": len(trials),
        "revoke_ok": len(revoke_ms),
        "final": sum(1 for t in trials if t.final),
        "how": dict(collections.Counter(t.how for t in trials)),
        "revoke_ms": Distribution.of(revoke_ms).as_dict() if revoke_ms else None,
        "requests_after_revoke": sum(t.requests_after_revoke for t in trials),
        "admitted_after_revoke": sum(t.admitted_after_revoke for t in trials),
        "trials_with_a_stale_admit": sum(1 for t in trials if t.admitted_after_revoke),
        "trials_where_every_worker_refused": len(finished),
        "all_refuse_ms": Distribution.of(finished).as_dict() if finished else None,
        "request_round_trip_ms": Distribution.of(round_trips).as_dict() if round_trips else None,
    }


def measure_backend(
    cluster: Cluster, backend: str, healthy: int, partitioned: int
) -> list[dict[str, Any]]:
    settings = {
        "APIKEY_LEASE_SECONDS": str(LEASE_SECONDS),
        "APIKEY_REVOCATION_POLL_MS": str(POLL_MS),
        "APIKEY_CACHE_TTL_SECONDS": str(CACHE_TTL_SECONDS),
        "APIKEY_CACHE_L1_TTL_SECONDS": str(CACHE_TTL_SECONDS),
        "APIKEY_CACHE_HMAC_SECRET": "bench-only-record-signing-secret",
    }
    with cluster.hosts(backend, extra_env={"A": settings, "B": settings}) as hosts:
        results = asyncio.run(run_cases(hosts, healthy, partitioned))
    return [summarise(backend, case, trials) for case, trials in results.items()]


def _ms(distribution: dict[str, Any] | None, key: str) -> str:
    return f"{distribution[key]:.1f} ms" if distribution else "n/a"


def _row(data: dict[str, Any]) -> list[str]:
    how = ", ".join(f"{name}: {count}" for name, count in sorted(data["how"].items()))
    return [
        data["backend"],
        data["case"],
        f"{data['final']}/{data['trials']}",
        f"{data['admitted_after_revoke']} of {data['requests_after_revoke']}",
        _ms(data["revoke_ms"], "median"),
        _ms(data["revoke_ms"], "p99"),
        _ms(data["revoke_ms"], "worst"),
        _ms(data["all_refuse_ms"], "worst"),
        how,
    ]


def checks_for(rows: list[dict[str, Any]]) -> list[Check]:
    checks = []
    for data in rows:
        label = f"{data['backend']} ({data['case']})"
        checks.append(
            Check(
                f"{label}: requests admitted after revoke returned",
                data["admitted_after_revoke"],
                0,
                "<=",
            )
        )
        revoke = data["revoke_ms"]
        if data["case"] == "healthy" and data["backend"] in ("redis", "tiered"):
            checks.append(
                Check(
                    f"{label}: revoke latency p50",
                    revoke["median"] if revoke else float("nan"),
                    HEALTHY_P50_TARGET_MS,
                    "<=",
                    "ms",
                )
            )
        checks.append(
            Check(
                f"{label}: revoke latency worst ≤ lease + one poll",
                revoke["worst"] if revoke and data["revoke_ok"] == data["trials"] else float("nan"),
                WORST_TARGET_MS,
                "<=",
                "ms",
            )
        )
    return checks


def run(healthy: int, partitioned: int) -> SectionResult:
    section = SectionResult(
        key="revocation",
        title=TITLE,
        method=(
            "Two hosts, game-api serve --workers 2 each, sharing a throw-away PostgreSQL "
            "database and one redis-server, each reaching Redis through a TCP proxy of its own. "
            f"APIKEY_LEASE_SECONDS={LEASE_SECONDS:g} (lowered from the default 10 for the "
            f"bench), APIKEY_REVOCATION_POLL_MS={POLL_MS}, cache TTL {CACHE_TTL_SECONDS} s. Per "
            "trial: create a key on A, use it until all four workers admitted it, revoke it on "
            f"A, then GET /v1/me on fresh connections ({BATCH} per host at a time, at least "
            f"{MIN_REQUESTS_AFTER_REVOKE}) until every worker of both hosts has refused it. "
            f"{healthy} healthy trials per backend, then {partitioned} with host B's Redis link "
            "cut (connections reset) after every worker cached the victims. Latency is the "
            "revoke's round trip as the client sees it."
        ),
        columns=[
            "backend",
            "case",
            "final",
            "admitted after revoke returned",
            "revoke p50",
            "revoke p99",
            "revoke worst",
            "every worker refuses (worst)",
            "finality.how",
        ],
    )
    postgres_url = os.environ.get("TEST_DATABASE_URL", DEFAULT_POSTGRES_URL)
    rows: list[dict[str, Any]] = []
    with running_cluster(postgres_url) as cluster:
        for backend in ALL_BACKENDS:
            if not backend_exists(backend):
                section.notes.append(f"{backend}: skipped (no such backend in this checkout).")
                continue
            for data in measure_backend(cluster, backend, healthy, partitioned):
                rows.append(data)
                section.rows.append(_row(data))
                incomplete = data["trials"] - data["trials_where_every_worker_refused"]
                if incomplete:
                    section.notes.append(
                        f"{backend} ({data['case']}): in {incomplete} trial(s) some worker still "
                        f"admitted the key {PROBE_DEADLINE_S:g} s after revoke returned."
                    )
    section.notes.append(
        f"Targets: 0 admitted after revoke returned, every backend and case; revoke p50 ≤ "
        f"{HEALTHY_P50_TARGET_MS:g} ms healthy (redis, tiered); worst ≤ lease + one poll = "
        f"{WORST_TARGET_MS:g} ms. For memory the Redis cut changes nothing it depends on."
    )
    section.data = {
        "lease_seconds": LEASE_SECONDS,
        "poll_ms": POLL_MS,
        "workers_per_host": 2,
        "hosts": 2,
        "backends": rows,
    }
    section.checks = checks_for(rows)
    return section
