"""``/metrics`` on the real ``game-api serve --workers 3``: exact counts summed over workers.

A known mix of requests lands on whichever workers the kernel picks; one scrape (answered by
one worker) must report every one of them, and still must after a worker that served some of
them is SIGKILLed and replaced by gunicorn: counters never go backwards.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.domain.keys import generate_api_key
from tests.support.live_server import LiveServer, worker_of

pytestmark = pytest.mark.slow

WORKERS = 3


@pytest.fixture
def server() -> Iterator[LiveServer]:
    live = LiveServer({"APIKEY_CACHE_BACKEND": "memory"}, workers=WORKERS)
    try:
        yield live
    finally:
        live.close()


def scrape(server: LiveServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = server.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return sum(v for (sample_name, _labels), v in samples.items() if sample_name == name)


def send_mix(server: LiveServer, key: str, valid: int, unknown: int, malformed: int) -> set[str]:
    """The requests, each on a fresh connection; the workers that answered a valid one."""
    workers: set[str] = set()
    for _ in range(valid):
        response = server.get("/v1/me", api_key=key)
        assert response.status_code == 200, response.text
        workers.add(worker_of(response))
    for _ in range(unknown):  # distinct keys: each one a cache miss, none a negative-cache hit
        assert server.get("/v1/me", api_key=generate_api_key().plaintext).status_code == 401
    for index in range(malformed):
        assert server.get("/v1/me", api_key=f"game_nonsense{index}").status_code == 401
    return workers


def worker_pids(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def check(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
    valid: int,
    unknown: int,
    malformed: int,
) -> None:
    me = {"route": "/v1/me", "method": "GET"}
    assert value(samples, "game_api_requests_total", **me, status="200") == valid
    assert value(samples, "game_api_requests_total", **me, status="401") == unknown + malformed
    assert value(samples, "game_api_auth_total", outcome="valid") == valid
    assert value(samples, "game_api_auth_total", outcome="unknown") == unknown
    assert value(samples, "game_api_auth_total", outcome="malformed") == malformed
    # Every well-formed key is looked up in the cache exactly once per request, on some tier.
    assert total(samples, "game_api_cache_lookups_total") == valid + unknown
    assert value(samples, "game_api_request_duration_seconds_count", route="/v1/me") == (
        valid + unknown + malformed
    )


def test_counts_are_summed_over_workers_and_survive_a_killed_worker(server: LiveServer) -> None:
    key = server.create_key("player", ["read"])["key"]
    server.start()
    assert server.process is not None

    served_by = send_mix(server, key, valid=30, unknown=9, malformed=6)
    check(scrape(server), valid=30, unknown=9, malformed=6)

    # Kill a worker that served some of the valid requests; gunicorn replaces it.
    before = worker_pids(server.process.pid)
    victim = int(sorted(served_by)[0])
    assert victim in before
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        now = worker_pids(server.process.pid)
        if victim not in now and len(now) == WORKERS:
            break
        assert time.monotonic() < deadline, f"gunicorn did not replace worker {victim}"
        time.sleep(0.05)

    send_mix(server, key, valid=12, unknown=4, malformed=3)
    check(scrape(server), valid=42, unknown=13, malformed=9)


def test_a_scrape_answered_by_another_worker_counts_the_request_just_answered(
    server: LiveServer,
) -> None:
    """Workers write their counts once per flush interval; a scrape waits for that, so a
    request answered a moment before by any worker is in it."""
    server.start()
    answered = 0
    scraped_elsewhere = 0
    for _ in range(300):
        refused = server.get("/v1/me", api_key="game_nonsense")
        assert refused.status_code == 401
        answered += 1
        response = server.get("/metrics")
        assert response.status_code == 200
        if worker_of(response) == worker_of(refused):
            continue  # the scraping worker flushes its own counts first anyway
        scraped_elsewhere += 1
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }
        assert (
            value(samples, "game_api_requests_total", route="/v1/me", method="GET", status="401")
            == answered
        )
        if scraped_elsewhere == 10:
            break
    assert scraped_elsewhere == 10, "the kernel never spread the two requests over two workers"
