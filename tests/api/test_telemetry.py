"""Request ids, /metrics in one process, JSON log lines, and what a worker says at startup."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from app.core import log_setup
from app.core.container import build_container
from app.domain.keys import generate_api_key
from app.main import create_app
from configs import Settings
from tests.api.conftest import Api, ApiFactory
from tests.support.db_fixtures import database_url  # noqa: F401


class JsonLines:
    """Every log record, rendered by the service's own JSON formatter."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def events(self) -> list[dict[str, Any]]:
        log_setup.flush_access_log()  # lines gathered for the current loop pass
        lines = self._stream.getvalue().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture
def json_logs() -> Iterator[JsonLines]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log_setup.formatter("json"))
    root = logging.getLogger()
    previous = root.level
    log_setup.configure_structlog()
    log_setup.configure_access_log(stream, "DEBUG", "json")  # its own, cheaper pipeline
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield JsonLines(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        structlog.reset_defaults()
        log_setup.reset_access_log()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# -- request ids ----------------------------------------------------------------------------


async def test_a_valid_request_id_is_kept_and_echoed(api: Api) -> None:
    response = await api.client.get("/healthz", headers={"X-Request-ID": "trace-42.a_b"})
    assert response.headers["x-request-id"] == "trace-42.a_b"


@pytest.mark.parametrize("sent", ["has space", "x" * 129, "semi;colon", "ünïcode"])
async def test_an_invalid_request_id_is_replaced(api: Api, sent: str) -> None:
    response = await api.client.get("/healthz", headers={"X-Request-ID": sent.encode("utf-8")})
    made = response.headers["x-request-id"]
    assert made != sent and len(made) == 32 and int(made, 16) >= 0


async def test_a_request_without_an_id_gets_a_new_one_each_time(api: Api) -> None:
    first = (await api.client.get("/healthz")).headers["x-request-id"]
    second = (await api.client.get("/healthz")).headers["x-request-id"]
    assert len(first) == 32 and first != second


# -- /metrics in one process ------------------------------------------------------------------


async def test_metrics_count_routes_by_template_and_auth_outcomes(api: Api) -> None:
    reader = await api.create_key(["read"])
    client = api.client
    assert (await client.get("/v1/me", headers=api.auth(reader.plaintext))).status_code == 200
    assert (
        await client.get("/v1/me", headers=api.auth(generate_api_key().plaintext))
    ).status_code == 401
    assert (await client.get("/v1/me", headers=api.auth("game_garbage"))).status_code == 401
    assert (await client.get("/v1/me")).status_code == 401
    assert (await client.get("/v1/keys", headers=api.auth(reader.plaintext))).status_code == 403
    revoke = f"/v1/keys/{reader.record.prefix}/revoke"
    assert (await client.post(revoke, headers=api.auth())).status_code == 200
    assert (await client.get("/v1/me", headers=api.auth(reader.plaintext))).status_code == 401
    assert (await client.get("/nowhere")).status_code == 404

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert reader.record.prefix not in response.text, "a key prefix became a label"
    found = samples(response.text)

    def count(name: str, **labels: str) -> float:
        return found.get((name, frozenset(labels.items())), 0.0)

    template = "/v1/keys/{prefix}/revoke"
    assert count("game_api_requests_total", route=template, method="POST", status="200") == 1
    assert count("game_api_requests_total", route="/v1/me", method="GET", status="401") == 4
    assert count("game_api_requests_total", route="unmatched", method="GET", status="404") == 1
    assert count("game_api_request_duration_seconds_count", route="/v1/me") == 5
    assert count("game_api_auth_total", outcome="valid") == 2  # the reader once, the admin once
    assert count("game_api_auth_total", outcome="unknown") == 1
    assert count("game_api_auth_total", outcome="malformed") == 1
    assert count("game_api_auth_total", outcome="missing") == 1
    assert count("game_api_auth_total", outcome="missing_scope") == 1
    assert count("game_api_auth_total", outcome="revoked") == 1
    # /metrics and /nowhere asked for no key: they are no outcome at all.
    assert count("game_api_auth_total", outcome="unavailable") == 0


async def test_metrics_can_be_switched_off(make_api: ApiFactory, database_url: str) -> None:  # noqa: F811
    api = await make_api(DATABASE_URL=database_url, METRICS_ENABLED=False)
    assert (await api.client.get("/metrics")).status_code == 404
    assert "x-request-id" in (await api.client.get("/healthz")).headers


async def test_cache_counters_reach_metrics_once_the_lifespan_attached_them(
    make_api: ApiFactory,
    database_url: str,  # noqa: F811
) -> None:
    api = await make_api(DATABASE_URL=database_url)
    app = api.client._transport.app  # type: ignore[attr-defined]
    async with app.router.lifespan_context(app):
        reader = await api.create_key(["read"])
        for _ in range(3):  # a miss, then process-memory hits
            assert (await api.client.get("/v1/me", headers=api.auth(reader.plaintext))).is_success
        found = samples((await api.client.get("/metrics")).text)
    lookups = {
        labels: v for (name, labels), v in found.items() if name == "game_api_cache_lookups_total"
    }
    hits = lookups[frozenset({("tier", "process"), ("result", "hit")})]
    misses = lookups[frozenset({("tier", "process"), ("result", "miss")})]
    assert (hits, misses) == (2, 1)
    assert found[("game_api_database_call_duration_seconds_count", frozenset())] >= 2


# -- logs -------------------------------------------------------------------------------------


async def test_json_access_lines_parse_and_carry_the_request_id(
    api: Api, json_logs: JsonLines
) -> None:
    reader = await api.create_key(["read"])
    response = await api.client.get(
        "/v1/me", headers={**api.auth(reader.plaintext), "X-Request-ID": "req-1"}
    )
    assert response.status_code == 200
    await api.client.get("/v1/me", headers=api.auth("game_garbage"))

    access = [event for event in json_logs.events() if event["logger"] == "game_api.access"]
    assert len(access) == 2
    ok, refused = access
    assert ok["request_id"] == "req-1"
    assert ok["route"] == "/v1/me" and ok["method"] == "GET" and ok["status"] == 200
    assert ok["key_prefix"] == reader.record.prefix and ok["auth"] == "valid"
    assert isinstance(ok["duration_ms"], float)
    assert ok["level"] == "info" and "timestamp" in ok and "pid" in ok
    assert refused["status"] == 401 and refused["auth"] == "malformed"
    assert refused["key_prefix"] is None and len(refused["request_id"]) == 32


async def test_a_library_line_logged_during_a_request_carries_its_id(
    api: Api, json_logs: JsonLines
) -> None:
    created = await api.client.post(
        "/v1/keys",
        headers={**api.auth(), "X-Request-ID": "create-7"},
        json={"name": "player", "scopes": ["read"]},
    )
    assert created.status_code == 201
    service_lines = [
        event for event in json_logs.events() if event["logger"] == "app.services.apikey_service"
    ]
    assert service_lines and all(line["request_id"] == "create-7" for line in service_lines)


async def test_access_log_can_be_switched_off(
    make_api: ApiFactory,
    database_url: str,  # noqa: F811
    json_logs: JsonLines,
) -> None:
    api = await make_api(DATABASE_URL=database_url, ACCESS_LOG=False)
    assert (await api.client.get("/healthz")).status_code == 200
    assert not [e for e in json_logs.events() if e["logger"] == "game_api.access"]


# -- startup ----------------------------------------------------------------------------------


async def test_startup_event_names_the_backend_and_masks_credentials(json_logs: JsonLines) -> None:
    settings = Settings(
        APIKEY_CACHE_BACKEND="redis",
        REDIS_URL="redis://:r3dis-secret@127.0.0.1:1/0",
        DATABASE_URL="postgresql+asyncpg://game:pg-secret@127.0.0.1:1/game",
    )
    container = build_container(settings)
    app = create_app(container=container)
    try:
        async with app.router.lifespan_context(app):
            pass
    finally:
        container.unwire()
    startup = [event for event in json_logs.events() if event["event"] == "startup"]
    assert len(startup) == 1
    event = startup[0]
    assert event["cache_backend"] == "redis"
    assert event["database_url"] == "postgresql+asyncpg://game:***@127.0.0.1:1/game"
    assert event["redis_url"] == "redis://:***@127.0.0.1:1/0"
    assert event["version"] == "0.1.0"
    text = json.dumps(json_logs.events())
    assert "r3dis-secret" not in text and "pg-secret" not in text


async def test_fallback_is_announced_at_startup_and_reported_by_readyz(
    make_api: ApiFactory,
    database_url: str,  # noqa: F811
    json_logs: JsonLines,
) -> None:
    api = await make_api(
        DATABASE_URL=database_url, APIKEY_CACHE_BACKEND="tiered", create_admin=False
    )
    app = api.client._transport.app  # type: ignore[attr-defined]
    async with app.router.lifespan_context(app):
        events = json_logs.events()
        warnings = [e for e in events if e["level"] == "warning" and "REDIS_URL" in e["event"]]
        assert len(warnings) == 1, "the fallback warning must come at startup, before a request"
        (startup,) = [e for e in events if e["event"] == "startup"]
        assert startup["cache_backend"] == "memory (fallback: REDIS_URL not set)"
        body = (await api.client.get("/readyz")).json()
    assert body["cache_backend"] == "memory (fallback: REDIS_URL not set)"
