"""Part 3: how revocation propagates to every worker, per backend.

Each trial creates a key through the API, uses it until every worker has admitted it (so every
worker that caches per process holds it), revokes it through the API, and from the moment revoke
returned sends requests on fresh connections until every worker has refused it. Workers are told
apart by the ``X-Worker-Id`` header (``EXPOSE_WORKER_ID``). Two figures per backend: requests
admitted after revoke returned, and the time until every worker refuses. The limit for the latter
is one request's round trip, the soonest a refusal can be observed at all.

The memory backend runs with a short cache TTL so that its documented caveat (other workers
refuse only when their entry expires) is measured in seconds rather than minutes; its trials run
several at a time for the same reason.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.api.worker_id import WORKER_ID_HEADER
from bench.backends import ALL_BACKENDS, backend_exists, unique_prefix
from bench.redis_keys import delete_prefix
from bench.results import Check, SectionResult
from bench.servers import LiveServer, server_settings, worker_pids
from bench.stats import Distribution

TITLE = "3. Revocation propagation to every worker"
WORKERS = 2
MEMORY_TTL_SECONDS = 2
BATCH = 4
MIN_REQUESTS_AFTER_REVOKE = 20
WARM_TIMEOUT_S = 10.0


@dataclass(slots=True)
class Trial:
    admitted_after_revoke: int = 0
    requests_after_revoke: int = 0
    all_refuse_ms: float = float("nan")
    request_ms: list[float] = field(default_factory=list)
    confirmed: bool = False
    acknowledged: int | None = None
    expected: int | None = None


class TrialError(Exception):
    pass


def fresh_connection_client(base_url: str) -> httpx.AsyncClient:
    """Every request on a new connection, so the kernel spreads them over the workers."""
    return httpx.AsyncClient(
        base_url=base_url,
        limits=httpx.Limits(max_keepalive_connections=0, max_connections=BATCH * 4),
        headers={"Connection": "close"},
        timeout=10.0,
    )


async def _batch(client: httpx.AsyncClient, key: str) -> list[tuple[int, str, float, float]]:
    """``BATCH`` concurrent GET /v1/me: (status, worker, answered at, round trip ms)."""

    async def one() -> tuple[int, str, float, float]:
        start = time.perf_counter()
        response = await client.get("/v1/me", headers={"X-API-Key": key})
        end = time.perf_counter()
        return (
            response.status_code,
            response.headers.get(WORKER_ID_HEADER, "?"),
            end,
            (end - start) * 1_000,
        )

    return list(await asyncio.gather(*(one() for _ in range(BATCH))))


async def run_trial(
    client: httpx.AsyncClient, admin_key: str, workers: set[str], deadline_s: float
) -> Trial:
    admin = {"X-API-Key": admin_key}
    created = await client.post(
        "/v1/keys", json={"name": "revocation-trial", "scopes": ["read"]}, headers=admin
    )
    created.raise_for_status()
    key, prefix = created.json()["key"], created.json()["prefix"]

    admitted_by: set[str] = set()
    warm_until = time.perf_counter() + WARM_TIMEOUT_S
    while admitted_by != workers:
        if time.perf_counter() > warm_until:
            raise TrialError(f"only {len(admitted_by)} of {len(workers)} workers admitted the key")
        admitted_by |= {
            worker for status, worker, _, _ in await _batch(client, key) if status == 200
        }

    revoked = await client.post(f"/v1/keys/{prefix}/revoke", headers=admin)
    returned_at = time.perf_counter()
    revoked.raise_for_status()
    report = revoked.json().get("cache_invalidation", {})
    trial = Trial(
        confirmed=bool(report.get("confirmed")),
        acknowledged=report.get("acknowledged"),
        expected=report.get("expected"),
    )
    first_refusal: dict[str, float] = {}
    give_up_at = returned_at + deadline_s
    while set(first_refusal) != workers or trial.requests_after_revoke < MIN_REQUESTS_AFTER_REVOKE:
        if time.perf_counter() > give_up_at:
            return trial  # all_refuse_ms stays NaN: not every worker refused in time
        for status, worker, answered_at, round_trip_ms in await _batch(client, key):
            trial.requests_after_revoke += 1
            trial.request_ms.append(round_trip_ms)
            if status == 200:
                trial.admitted_after_revoke += 1
            elif status == 401:
                first_refusal.setdefault(worker, answered_at)
            else:
                raise TrialError(f"unexpected status {status} after revoke")
    trial.all_refuse_ms = (max(first_refusal.values()) - returned_at) * 1_000
    return trial


async def run_trials(
    server: LiveServer, admin_key: str, trials: int, concurrency: int, deadline_s: float
) -> list[Trial]:
    workers = {str(pid) for pid in worker_pids(server)}
    results: list[Trial] = []
    async with fresh_connection_client(server.base_url) as client:
        while len(results) < trials:
            group = min(concurrency, trials - len(results))
            results += await asyncio.gather(
                *(run_trial(client, admin_key, workers, deadline_s) for _ in range(group))
            )
    return results


def summarise(backend: str, trials: list[Trial], ttl: int) -> dict[str, Any]:
    finished = [
        trial.all_refuse_ms for trial in trials if trial.all_refuse_ms == trial.all_refuse_ms
    ]
    round_trips = [ms for trial in trials for ms in trial.request_ms]
    acks = [(t.acknowledged, t.expected) for t in trials if t.expected is not None]
    return {
        "backend": backend,
        "trials": len(trials),
        "cache_ttl_seconds": ttl,
        "requests_after_revoke": sum(t.requests_after_revoke for t in trials),
        "admitted_after_revoke": sum(t.admitted_after_revoke for t in trials),
        "trials_with_a_stale_admit": sum(1 for t in trials if t.admitted_after_revoke),
        "trials_where_every_worker_refused": len(finished),
        "all_refuse_ms": Distribution.of(finished).as_dict() if finished else None,
        "request_round_trip_ms": Distribution.of(round_trips).as_dict() if round_trips else None,
        "invalidation_confirmed": sum(1 for t in trials if t.confirmed),
        "acknowledged_of_expected": (
            {"acknowledged": sum(a or 0 for a, _ in acks), "expected": sum(e or 0 for _, e in acks)}
            if acks
            else None
        ),
    }


def measure_backend(backend: str, redis_url: str, trials: int) -> dict[str, Any]:
    prefix = unique_prefix(f"revoke-{backend}")
    ttl = MEMORY_TTL_SECONDS if backend == "memory" else 60
    settings = server_settings(
        backend, redis_url, prefix, EXPOSE_WORKER_ID=True, APIKEY_CACHE_TTL_SECONDS=ttl
    )
    concurrency = 10 if backend == "memory" else 1
    try:
        server = LiveServer(settings, workers=WORKERS)
        admin_key = server.create_admin_key()
        with server:
            server.prime_every_worker(admin_key)
            results = asyncio.run(run_trials(server, admin_key, trials, concurrency, ttl + 5.0))
    finally:
        delete_prefix(redis_url, prefix)
    return summarise(backend, results, ttl)


def _row(data: dict[str, Any]) -> list[str]:
    refuse = data["all_refuse_ms"]
    trip = data["request_round_trip_ms"]
    acks = data["acknowledged_of_expected"]
    return [
        data["backend"],
        str(data["trials"]),
        f"{data['admitted_after_revoke']} of {data['requests_after_revoke']}",
        str(data["trials_with_a_stale_admit"]),
        f"{refuse['median']:.1f} ms" if refuse else "n/a",
        f"{refuse['worst']:.1f} ms" if refuse else "n/a",
        f"{trip['median']:.1f} ms" if trip else "n/a",
        f"{data['cache_ttl_seconds']} s",
        f"{acks['acknowledged']}/{acks['expected']}" if acks else "-",
    ]


def run(redis_url: str, trials: int) -> SectionResult:
    section = SectionResult(
        key="revocation",
        title=TITLE,
        method=(
            f"game-api serve --workers {WORKERS}, {trials} trials per backend: create a key, "
            "use it until every worker admitted it, revoke it through the API, then GET /v1/me "
            f"on fresh connections ({BATCH} at a time, at least {MIN_REQUESTS_AFTER_REVOKE}) until "
            "every worker (X-Worker-Id) has refused it. Memory runs with a "
            f"{MEMORY_TTL_SECONDS} s cache TTL, 10 trials at a time."
        ),
        columns=[
            "backend",
            "trials",
            "admitted after revoke returned",
            "trials with a stale admit",
            "every worker refuses (median)",
            "every worker refuses (worst)",
            "one request (limit)",
            "cache TTL",
            "acks",
        ],
    )
    rows = []
    for backend in ALL_BACKENDS:
        if not backend_exists(backend):
            section.notes.append(f"{backend}: skipped (no such backend in this checkout).")
            continue
        data = measure_backend(backend, redis_url, trials)
        rows.append(data)
        section.rows.append(_row(data))
        if backend != "memory":
            section.checks.append(
                Check(
                    f"{backend}: requests admitted after revoke returned",
                    data["admitted_after_revoke"],
                    0,
                    "<=",
                )
            )
        incomplete = data["trials"] - data["trials_where_every_worker_refused"]
        if incomplete:
            section.notes.append(
                f"{backend}: in {incomplete} trial(s) some worker still admitted the key "
                f"{data['cache_ttl_seconds'] + 5} s after revoke returned."
            )
    section.notes.append(
        "memory: a stale admit until the other worker's entry expires is its documented caveat "
        "(no target); redis and tiered must admit nothing once revoke has returned."
    )
    section.data = {"workers": WORKERS, "backends": rows}
    return section
