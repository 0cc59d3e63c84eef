"""Part 1: the in-process cost of a cache hit on the request path, per backend.

What an authenticated route pays for a hit: ``ApiKeyService.admit_from_memory`` for the
per-process caches (memory, tiered: the route calls it before awaiting anything), and
``await ApiKeyService.authenticate`` for the shared one (redis). Each backend is timed next to
its floor, the least any implementation could do for the same answer: sha256 of the key plus a
dict lookup for the per-process caches, and one raw redis-py ``GET`` of the same Redis key on the
same client for the shared one. The floor's sha256 is the service's own
(``app.domain.digests.sha256``): a faster hash in the service is then no faster against its
floor. The per-process hit through ``await authenticate`` (what a
caller outside a route pays: one coroutine more) is shown beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from app.domain.digests import sha256
from app.domain.keys import digest, validated_prefix
from bench.backends import ALL_BACKENDS, BackendUnavailable, BenchService, open_service
from bench.results import Check, SectionResult, fmt_ns, fmt_ratio
from bench.stats import Distribution, ratio
from bench.timing import Comparison, Runner, async_calls, clock_overhead_ns, compare, sync_calls

TITLE = "1. Cache-hit cost on the request path, in-process"
LOCAL_HIT_FLOOR_RATIO_TARGET = 2.0
"""A per-process hit may cost at most twice sha256 + dict lookup, both timed in this run."""
REDIS_RATIO_TARGET = 1.3
TIERED_VS_MEMORY_TARGET = 1.2


@dataclass(frozen=True, slots=True)
class HitCost:
    backend: str
    floor_name: str
    subject: Distribution
    floor: Distribution

    @property
    def median_ratio(self) -> float:
        return ratio(self.subject.median, self.floor.median)

    @property
    def p99_ratio(self) -> float:
        return ratio(self.subject.p99, self.floor.p99)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "floor": self.floor_name,
            "subject_ns": self.subject.as_dict(),
            "floor_ns": self.floor.as_dict(),
            "median_ratio": self.median_ratio,
            "p99_ratio": self.p99_ratio,
        }


def dict_lookup_floor(plaintext: str) -> Runner:
    """sha256 of the key and one dict lookup: what a per-process cache cannot go below."""
    table = {digest(plaintext): (plaintext[:13], True)}
    encoded_key = plaintext

    def lookup() -> object:
        return table.get(sha256(encoded_key.encode()).hexdigest())

    return sync_calls(lookup)


def checked_lookup_floor(plaintext: str) -> Runner:
    """The offline format check, then the dict floor: what a hit would cost at least if the
    check came first. Set beside the bare floor, it shows why a process-local hit looks up the
    digest before the check (only an issued key's digest can be found there; everything else is
    checked before any cache backend, Redis or database is asked)."""
    table = {digest(plaintext): (plaintext[:13], True)}

    def lookup() -> object:
        validated_prefix(plaintext)
        return table.get(sha256(plaintext.encode()).hexdigest())

    return sync_calls(lookup)


def raw_get_floor(bench: BenchService, plaintext: str) -> Runner:
    """One raw ``GET`` of the same Redis key, on the same client and pool as the service."""
    client = bench.redis_client()
    redis_key = bench.key_prefix + digest(plaintext)

    return async_calls(partial(client.get, redis_key))


def request_path_hit(bench: BenchService, plaintext: str) -> Runner:
    """What an authenticated route runs for a hit with ``bench``'s backend."""
    if bench.backend == "redis":
        return async_calls(partial(bench.service.authenticate, plaintext))
    return sync_calls(partial(bench.service.admit_from_memory, plaintext))


async def seeded_key(bench: BenchService) -> str:
    """A new admin key, authenticated once so that the next calls are cache hits."""
    created = await bench.service.create("bench", ["admin"])
    await bench.service.authenticate(created.plaintext)
    return created.plaintext


async def measure_backend(backend: str, redis_url: str, calls: int) -> HitCost:
    async with open_service(backend, redis_url) as bench:
        plaintext = await seeded_key(bench)
        hits_before = bench.service.metrics.cache_hits
        if backend == "redis":
            floor_name, floor = "raw redis-py GET", raw_get_floor(bench, plaintext)
        else:
            floor_name, floor = "sha256 + dict lookup", dict_lookup_floor(plaintext)

        result = await compare(request_path_hit(bench, plaintext), floor, calls=calls)
        lookups = bench.service.metrics.repository_lookups
        hits = bench.service.metrics.cache_hits - hits_before
        if hits < calls or lookups > 1:
            raise RuntimeError(
                f"{backend}: expected only cache hits, saw {hits} hits and {lookups} lookups"
            )
        return HitCost(backend, floor_name, result.subject, result.floor)


async def measure_tiered_beside_memory(redis_url: str, calls: int) -> Comparison:
    """Tiered and memory hits in the same alternating rounds: their ratio on one machine state.

    Timing each backend in its own window lets the machine's speed drift in between (the floor
    alone has moved 1.8x between windows here), so the target ratio is measured side by side.
    """
    async with (
        open_service("tiered", redis_url) as tiered,
        open_service("memory", redis_url) as memory,
    ):
        tiered_key = await seeded_key(tiered)
        memory_key = await seeded_key(memory)

        return await compare(
            request_path_hit(tiered, tiered_key), request_path_hit(memory, memory_key), calls=calls
        )


def checks_for(
    costs: dict[str, HitCost], tiered_vs_memory: Comparison | None = None
) -> list[Check]:
    checks: list[Check] = []
    for name in ("memory", "tiered"):
        if name in costs:
            checks.append(
                Check(
                    f"{name}: hit cost ≤ 2x sha256 + dict floor (median, same run)",
                    costs[name].median_ratio,
                    LOCAL_HIT_FLOOR_RATIO_TARGET,
                    "<=",
                    "x",
                )
            )
    if "redis" in costs:
        checks.append(
            Check(
                "redis: hit cost ≤ 1.3x raw GET (median)",
                costs["redis"].median_ratio,
                REDIS_RATIO_TARGET,
                "<=",
                "x",
            )
        )
    if tiered_vs_memory is not None:
        checks.append(
            Check(
                "tiered: hit cost ≤ 1.2x memory (median, side by side)",
                ratio(tiered_vs_memory.subject.median, tiered_vs_memory.floor.median),
                TIERED_VS_MEMORY_TARGET,
                "<=",
                "x",
            )
        )
    return checks


async def run(redis_url: str, calls: int) -> SectionResult:
    overhead = clock_overhead_ns()
    section = SectionResult(
        key="hit_cost",
        title=TITLE,
        method=(
            f"{calls:,} calls per backend and as many of its floor, after 2,000 warm-up calls, "
            "in 10 alternating rounds; every call timed on its own with time.perf_counter_ns "
            f"(reading the clock costs ~{overhead:.0f} ns, included in subject and floor alike). "
            "Real ApiKeyService from the project's container, in-memory repository."
        ),
        columns=[
            "backend",
            "median",
            "p99",
            "floor",
            "floor median",
            "floor p99",
            "median / floor",
            "p99 / floor",
        ],
    )
    costs: dict[str, HitCost] = {}
    for backend in ALL_BACKENDS:
        try:
            cost = await measure_backend(backend, redis_url, calls)
        except BackendUnavailable as exc:
            section.notes.append(f"{backend}: skipped ({exc}).")
            continue
        costs[backend] = cost
        section.rows.append(
            [
                backend,
                fmt_ns(cost.subject.median),
                fmt_ns(cost.subject.p99),
                cost.floor_name,
                fmt_ns(cost.floor.median),
                fmt_ns(cost.floor.p99),
                fmt_ratio(cost.median_ratio),
                fmt_ratio(cost.p99_ratio),
            ]
        )
    tiered_vs_memory = None
    if "tiered" in costs and "memory" in costs:
        tiered_vs_memory = await measure_tiered_beside_memory(redis_url, calls)
        section.notes.append(
            "tiered beside memory, in the same alternating rounds: "
            f"{fmt_ns(tiered_vs_memory.subject.median)} vs "
            f"{fmt_ns(tiered_vs_memory.floor.median)} median "
            f"({fmt_ratio(ratio(tiered_vs_memory.subject.median, tiered_vs_memory.floor.median))})."
        )
    checked_vs_floor = awaited_vs_floor = None
    if "memory" in costs:
        async with open_service("memory", redis_url) as memory:
            plaintext = await seeded_key(memory)
            checked_vs_floor = await compare(
                checked_lookup_floor(plaintext), dict_lookup_floor(plaintext), calls=calls
            )
            awaited_vs_floor = await compare(
                async_calls(partial(memory.service.authenticate, plaintext)),
                dict_lookup_floor(plaintext),
                calls=calls,
            )
        section.notes.append(
            "memory: the same hit through await ApiKeyService.authenticate (a caller outside a "
            f"route), side by side with the floor: {fmt_ns(awaited_vs_floor.subject.median)} vs "
            f"{fmt_ns(awaited_vs_floor.floor.median)} median "
            f"({fmt_ratio(ratio(awaited_vs_floor.subject.median, awaited_vs_floor.floor.median))})."
        )
        section.notes.append(
            "format check (validated_prefix) + sha256 + dict lookup, side by side with the bare "
            f"floor: {fmt_ns(checked_vs_floor.subject.median)} vs "
            f"{fmt_ns(checked_vs_floor.floor.median)} median "
            f"({fmt_ratio(ratio(checked_vs_floor.subject.median, checked_vs_floor.floor.median))})"
            ": what a hit would cost at least with the check first, which is why a process-local "
            "hit looks its digest up before the check (see ApiKeyService.admit_from_memory)."
        )
    section.data = {
        "checked_lookup_beside_floor_ns": None
        if checked_vs_floor is None
        else {
            "checked": checked_vs_floor.subject.as_dict(),
            "floor": checked_vs_floor.floor.as_dict(),
        },
        "authenticate_beside_floor_ns": None
        if awaited_vs_floor is None
        else {
            "authenticate": awaited_vs_floor.subject.as_dict(),
            "floor": awaited_vs_floor.floor.as_dict(),
        },
        "clock_overhead_ns": overhead,
        "calls": calls,
        "backends": {name: cost.as_dict() for name, cost in costs.items()},
        "tiered_beside_memory_ns": None
        if tiered_vs_memory is None
        else {
            "tiered": tiered_vs_memory.subject.as_dict(),
            "memory": tiered_vs_memory.floor.as_dict(),
        },
    }
    section.checks = checks_for(costs, tiered_vs_memory)
    return section
