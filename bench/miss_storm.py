"""Part 4: a miss storm — many concurrent first requests for one key nobody has cached yet.

Single-flight should turn them into one repository lookup per process, with every caller
answered once that lookup returns. The repository is the in-memory one behind a fixed simulated
round trip (so the requests really overlap) and a counter. The limit for the time to answer all
is the same number of concurrent authentications of a key already cached, plus one repository
round trip: what the storm would cost if the miss were free.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from app.domain.keys import digest, generate_api_key
from app.repositories.base import ApiKeyRecord
from app.repositories.memory import InMemoryApiKeyRepository
from app.services.apikey_service import ApiKeyService, utc_now
from bench.backends import ALL_BACKENDS, BackendUnavailable, open_service
from bench.results import Check, SectionResult, fmt_ratio
from bench.stats import ratio

TITLE = "4. Miss storm: concurrent first requests for one uncached key"
REPOSITORY_ROUND_TRIP_S = 0.002


class CountingRepository(InMemoryApiKeyRepository):
    """The in-memory repository with a database-like round trip and a lookup counter."""

    def __init__(self, round_trip_s: float) -> None:
        super().__init__()
        self.round_trip_s = round_trip_s
        self.by_digest = 0
        self.by_prefix = 0

    @property
    def lookups(self) -> int:
        return self.by_digest + self.by_prefix

    def reset(self) -> None:
        self.by_digest = self.by_prefix = 0

    async def get_by_digest(self, digest: str) -> ApiKeyRecord | None:
        self.by_digest += 1
        await asyncio.sleep(self.round_trip_s)
        return await super().get_by_digest(digest)

    async def get_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        self.by_prefix += 1
        await asyncio.sleep(self.round_trip_s)
        return await super().get_by_prefix(prefix)


async def stored_key(repository: InMemoryApiKeyRepository, now: datetime) -> str:
    """A key written straight to the repository, so no cache or memo has ever seen it."""
    parsed = generate_api_key()
    await repository.add(
        ApiKeyRecord(
            prefix=parsed.prefix,
            name="storm",
            scopes=("read",),
            created_at=now,
            digest=digest(parsed.plaintext),
        )
    )
    return parsed.plaintext


async def answer_all(service: ApiKeyService, plaintext: str, concurrency: int) -> float:
    """Seconds until every one of ``concurrency`` simultaneous authentications returned."""
    start = time.perf_counter()
    results = await asyncio.gather(
        *(service.authenticate(plaintext) for _ in range(concurrency)), return_exceptions=True
    )
    elapsed = time.perf_counter() - start
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {concurrency} storm requests failed: {failures[0]!r}"
        )
    return elapsed


async def storm(backend: str, redis_url: str, concurrency: int) -> dict[str, Any]:
    repository = CountingRepository(REPOSITORY_ROUND_TRIP_S)
    async with open_service(backend, redis_url, repository=repository) as bench:
        await answer_all(bench.service, await stored_key(repository, utc_now()), 100)
        repository.reset()
        metrics = bench.service.metrics
        errors_before, opened_before = metrics.cache_errors, metrics.breaker_opened
        plaintext = await stored_key(repository, utc_now())
        storm_s = await answer_all(bench.service, plaintext, concurrency)
        by_digest, by_prefix = repository.by_digest, repository.by_prefix
        cache_errors = metrics.cache_errors - errors_before
        breaker_opened = metrics.breaker_opened - opened_before
        cached_s = await answer_all(bench.service, plaintext, concurrency)
    limit_s = cached_s + REPOSITORY_ROUND_TRIP_S
    return {
        "backend": backend,
        "concurrency": concurrency,
        "repository_lookups": by_digest + by_prefix,
        "lookups_by_digest": by_digest,
        "lookups_by_prefix": by_prefix,
        "cache_errors": cache_errors,
        "breaker_opened": breaker_opened,
        "storm_ms": storm_s * 1_000,
        "all_cached_ms": cached_s * 1_000,
        "limit_ms": limit_s * 1_000,
        "ratio": ratio(storm_s, limit_s),
    }


async def run(redis_url: str, concurrency: int) -> SectionResult:
    section = SectionResult(
        key="miss_storm",
        title=TITLE,
        method=(
            f"{concurrency:,} concurrent ApiKeyService.authenticate calls (asyncio.gather, one "
            "process, after a warm-up storm on another key) for a key present only in the "
            "repository, which answers after a simulated "
            f"{REPOSITORY_ROUND_TRIP_S * 1_000:.0f} ms round trip. Limit = the same calls once "
            "the key is cached + one repository round trip."
        ),
        columns=[
            "backend",
            "repository lookups",
            "cache errors (breaker opened)",
            "time to answer all",
            "limit",
            "time / limit",
        ],
    )
    rows: list[dict[str, Any]] = []
    for backend in ALL_BACKENDS:
        try:
            row = await storm(backend, redis_url, concurrency)
        except BackendUnavailable as exc:
            section.notes.append(f"{backend}: skipped ({exc}).")
            continue
        rows.append(row)
        section.rows.append(
            [
                backend,
                f"{row['repository_lookups']} ({row['lookups_by_digest']} by digest, "
                f"{row['lookups_by_prefix']} by prefix)",
                f"{row['cache_errors']} ({row['breaker_opened']})",
                f"{row['storm_ms']:.1f} ms",
                f"{row['limit_ms']:.1f} ms",
                fmt_ratio(row["ratio"]),
            ]
        )
        section.checks.append(
            Check(
                f"{backend}: single-flight, repository lookups per process",
                row["repository_lookups"],
                1,
                "<=",
            )
        )
    section.data = {"round_trip_ms": REPOSITORY_ROUND_TRIP_S * 1_000, "backends": rows}
    return section
