"""``tiered`` on the real ``game-api serve --workers 4``: a revocation reaches every worker's L1
before revoke returns.

200 trials of: create a key → use it until every worker has answered 200 for it (each then holds
it in its L1) → revoke through the API → at once at least 20 requests on fresh connections,
continuing until every worker has answered. Not one of them may be admitted. The ack counts
reported by each revoke are printed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from redis.asyncio import Redis

from app.domain.keys import digest
from tests.support.live_server import LiveServer, worker_of

pytestmark = [pytest.mark.slow, pytest.mark.redis_server, pytest.mark.timeout(1200)]

WORKERS = 4
TRIALS = 200
FRESH_REQUESTS_AFTER_REVOKE = 20
# A time, not a count: the kernel hands fresh connections to the workers far from evenly (seen:
# 4,519 / 3,304 / 1,707 / 495 in 5 s, and one worker none in 500 in a row), so a count of
# requests fails on a healthy server.
EVERY_WORKER_WITHIN_SECONDS = 30.0


@pytest.fixture
def server(redis_url: str, key_prefix: str) -> Iterator[LiveServer]:
    live = LiveServer(
        {
            "APIKEY_CACHE_BACKEND": "tiered",
            "REDIS_URL": redis_url,
            "APIKEY_CACHE_REDIS_KEY_PREFIX": key_prefix,
            "APIKEY_CACHE_TTL_SECONDS": "300",
            "APIKEY_CACHE_L1_TTL_SECONDS": "300",
            # Generous for a loaded 2-core machine: the bound is what keeps revoke from hanging.
            "APIKEY_INVALIDATION_ACK_TIMEOUT_MS": "3000",
        },
        workers=WORKERS,
    )
    try:
        yield live
    finally:
        live.close()


def fresh_connections(server: LiveServer) -> httpx.Client:
    """Every request on a new connection (so the kernel may pick any worker), without paying
    for a new client, and its TLS context, per request."""
    return httpx.Client(
        base_url=server.base_url,
        timeout=10.0,
        headers={"Connection": "close"},
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def prime_every_worker(http: httpx.Client, key: str) -> set[str]:
    """Use ``key`` until every worker has answered 200 (and so holds it in its L1)."""
    seen: set[str] = set()
    deadline = time.monotonic() + EVERY_WORKER_WITHIN_SECONDS
    while len(seen) < WORKERS:
        assert time.monotonic() < deadline, f"only {len(seen)} of {WORKERS} workers answered"
        response = http.get("/v1/me", headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        seen.add(worker_of(response))
    return seen


async def subscribers(client: Redis, channel: str) -> int:
    counts = await client.pubsub_numsub(channel)
    return int(counts[0][1])


def fresh_requests_after_revoke(http: httpx.Client, key: str) -> list[tuple[int, str]]:
    """At least 20 requests on fresh connections, going on until every worker has answered."""
    answers: list[tuple[int, str]] = []
    deadline = time.monotonic() + EVERY_WORKER_WITHIN_SECONDS
    while len(answers) < FRESH_REQUESTS_AFTER_REVOKE or len({w for _, w in answers}) < WORKERS:
        assert time.monotonic() < deadline, "some worker never answered"
        response = http.get("/v1/me", headers={"X-API-Key": key})
        assert response.status_code in (200, 401), response.text
        answers.append((response.status_code, worker_of(response)))
    return answers


async def test_revocation_reaches_every_worker_before_revoke_returns(
    server: LiveServer, real_redis: Redis, key_prefix: str
) -> None:
    admin_key = server.create_admin_key()
    admin = {"X-API-Key": admin_key}
    server.start()
    ack_counts: Counter[tuple[int, int]] = Counter()
    admitted_after_revoke: list[tuple[int, str]] = []
    with fresh_connections(server) as http:
        # Listeners start on a worker's first request; wait until all four are subscribed.
        deadline = time.monotonic() + 60
        while await subscribers(real_redis, key_prefix + "invalidate") < WORKERS:
            assert time.monotonic() < deadline, "not every worker subscribed to the channel"
            prime_every_worker(http, admin_key)

        for trial in range(TRIALS):
            created = http.post(
                "/v1/keys", headers=admin, json={"name": f"trial-{trial}", "scopes": ["read"]}
            )
            assert created.status_code == 201, created.text
            key, prefix = created.json()["key"], created.json()["prefix"]
            assert len(prime_every_worker(http, key)) == WORKERS
            assert await real_redis.exists(key_prefix + digest(key)) == 1

            revoked = http.post(f"/v1/keys/{prefix}/revoke", headers=admin)
            answers = fresh_requests_after_revoke(http, key)

            assert revoked.status_code == 200, revoked.text
            invalidation = revoked.json()["cache_invalidation"]
            ack_counts[(invalidation["acknowledged"], invalidation["expected"])] += 1
            admitted_after_revoke += [(trial, w) for status, w in answers if status == 200]
            assert invalidation["scope"] == "all-workers"
            assert invalidation["confirmed"] is True, invalidation["detail"]

    summary = ", ".join(
        f"{count} x {acked}/{expected}" for (acked, expected), count in sorted(ack_counts.items())
    )
    print(f"\ntiered, {WORKERS} workers, {TRIALS} revokes: acknowledged/expected = {summary}")
    assert admitted_after_revoke == [], f"admitted after revoke returned: {admitted_after_revoke}"
    assert set(ack_counts) == {(WORKERS, WORKERS)}
