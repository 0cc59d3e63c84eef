"""Key plaintexts and digests never reach a log line, on any path, at any level.

Every record from every logger is captured at DEBUG and formatted with its exception text, while
keys are created, used, refused, revoked and rotated — with Redis healthy, with Redis down (the
error paths log the most) and with the database down.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import structlog

from app.core import log_setup
from app.domain.keys import digest, generate_api_key
from tests.correctness.http_app import ServedApp, served_app
from tests.support.databases import migrated_sqlite_url


class CapturingHandler(logging.Handler):
    def __init__(self, formatter: logging.Formatter | None = None) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(formatter or logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.stream = io.StringIO()  # the access events' own writer, in JSON mode

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # includes exception text and stack info


@pytest.fixture(params=["plain", "json"])
def captured_logs(request: pytest.FixtureRequest) -> Iterator[CapturingHandler]:
    """Everything at DEBUG, and SQL statement logging on (as an operator debugging would).

    ``json``: rendered as ``LOG_FORMAT=json`` renders it, structlog events (the access log with
    its key prefix, the startup event) included.

    ``sqlalchemy.engine`` at INFO logs statements and their parameters (hidden by the engine's
    ``hide_parameters``). At DEBUG it also logs result rows, which hold the stored digest; that
    is a developer's setting, outside this promise.
    """
    root = logging.getLogger()
    sql = logging.getLogger("sqlalchemy.engine")
    as_json = request.param == "json"
    handler = CapturingHandler(log_setup.formatter("json") if as_json else None)
    if as_json:
        log_setup.configure_structlog()
        log_setup.configure_access_log(handler.stream, "DEBUG", "json")
    previous_levels = root.level, sql.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    sql.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_levels[0])
        sql.setLevel(previous_levels[1])
        if as_json:
            structlog.reset_defaults()
            log_setup.reset_access_log()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return migrated_sqlite_url(tmp_path)


async def _lifecycle_over_http(served: ServedApp, secrets: list[str]) -> None:
    client = served.client
    created = await client.post(
        "/v1/keys", headers=served.auth(), json={"name": "player", "scopes": ["read"]}
    )
    assert created.status_code == 201
    plaintext, prefix = created.json()["key"], created.json()["prefix"]
    secrets.append(plaintext)
    for _ in range(2):  # a miss, then a hit
        assert (await client.get("/v1/me", headers=served.auth(plaintext))).status_code == 200
    forged = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    unknown = generate_api_key().plaintext
    secrets.extend([forged, unknown])
    for refused in (forged, unknown):
        assert (await client.get("/v1/me", headers=served.auth(refused))).status_code == 401

    rotated = await client.post(
        f"/v1/keys/{prefix}/rotate", headers=served.auth(), json={"grace_seconds": 60}
    )
    assert rotated.status_code == 201
    secrets.append(rotated.json()["key"])
    assert (await client.get("/v1/me", headers=served.auth(rotated.json()["key"]))).is_success
    revoked = await client.post(f"/v1/keys/{prefix}/revoke", headers=served.auth())
    assert revoked.status_code == 200
    assert (await client.get("/v1/me", headers=served.auth(plaintext))).status_code == 401


def _assert_nothing_secret(lines: list[str], secrets: list[str]) -> None:
    assert lines, "nothing was logged: the capture is not working"
    forbidden = {value for secret in secrets for value in (secret, digest(secret))}
    leaks = [line for line in lines if any(value in line for value in forbidden)]
    leaking_loggers = sorted({line.split(" ", 1)[0] for line in leaks})
    assert not leaks, f"keys or digests in {len(leaks)} log lines from {leaking_loggers}"


async def test_no_secret_in_logs_with_redis_up_down_and_the_database_down(
    sqlite_url: str,
    fake_server: fakeredis.FakeServer,
    key_prefix: str,
    captured_logs: CapturingHandler,
) -> None:
    redis_client = fakeredis.FakeAsyncRedis(server=fake_server)
    secrets: list[str] = []
    try:
        async with served_app(
            redis_client=redis_client,
            DATABASE_URL=sqlite_url,
            APIKEY_CACHE_BACKEND="redis",
            APIKEY_CACHE_REDIS_KEY_PREFIX=key_prefix,
            CACHE_BREAKER_FAILURE_THRESHOLD=2,
        ) as served:
            secrets.append(served.admin.plaintext)
            await _lifecycle_over_http(served, secrets)

            fake_server.connected = False  # errors, breaker, unconfirmed invalidations
            await _lifecycle_over_http(served, secrets)
            fake_server.connected = True

            served.repository.unavailable = True  # 503s and repository warnings
            for secret in secrets:
                await served.client.get("/v1/me", headers=served.auth(secret))
            served.repository.unavailable = False
    finally:
        await redis_client.aclose()

    log_setup.flush_access_log()
    lines = captured_logs.lines + captured_logs.stream.getvalue().splitlines()
    levels = " ".join(lines).upper()
    assert "ERROR" in levels and "WARNING" in levels, "the failure paths were not exercised"
    if lines[0].startswith("{"):
        events = [json.loads(line) for line in lines]
        access = [event for event in events if event.get("logger") == "game_api.access"]
        assert any(event["key_prefix"] for event in access), "no access event was captured"
    _assert_nothing_secret(lines, secrets)
