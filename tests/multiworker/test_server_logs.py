"""What ``game-api serve --workers 2`` prints: one JSON format for every line, a startup event per
worker naming the backend in effect, access events with request ids, and a clean stop."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.live_server import LiveServer

pytestmark = pytest.mark.slow

WORKERS = 2


@pytest.fixture
def server() -> Iterator[LiveServer]:
    live = LiveServer(
        {
            "APIKEY_CACHE_BACKEND": "tiered",  # without REDIS_URL: the memory fallback
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        },
        workers=WORKERS,
    )
    try:
        yield live
    finally:
        live.close()


def events_of(text: str) -> list[dict[str, Any]]:
    """Every line the server tree printed, each of which must be one JSON object."""
    events = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"a line not in the JSON format: {line!r}") from None
    return events


def wait_for_startups(server: LiveServer, timeout: float = 60.0) -> None:
    """Until every worker has logged its startup event (healthy means one worker is up)."""
    deadline = time.monotonic() + timeout
    while server.log_text().count('"event": "startup"') < WORKERS:
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.05)


def test_every_line_is_json_and_a_stop_is_clean(server: LiveServer) -> None:
    server.start()
    wait_for_startups(server)
    with httpx.Client(base_url=server.base_url) as client:
        me = client.get("/v1/me", headers={"X-Request-ID": "live-1", "X-API-Key": "game_bad"})
    assert me.status_code == 401 and me.headers["x-request-id"] == "live-1"
    server.stop()

    events = events_of(server.log_text())
    loggers = {event.get("logger") for event in events}
    assert {"gunicorn.error", "uvicorn.error", "game_api.startup", "game_api.access"} <= loggers

    startups = [event for event in events if event["event"] == "startup"]
    assert len(startups) == WORKERS
    assert {event["pid"] for event in startups} == {
        event["pid"] for event in events if event.get("logger") == "uvicorn.error"
    }
    for startup in startups:
        assert startup["cache_backend"] == "memory (fallback: REDIS_URL not set)"
        assert startup["workers"] == WORKERS

    (access,) = [event for event in events if event.get("request_id") == "live-1"]
    assert access["route"] == "/v1/me" and access["status"] == 401
    assert access["auth"] == "malformed"

    # gunicorn's wrapper sockets used to be closed twice per worker at every stop.
    assert not [event for event in events if "closing socket" in event["event"]]
    assert any(event["event"].startswith("Shutting down: Master") for event in events)
