"""Redis is a cache, never an authority: the real ``game-api serve --workers 4``.

The service runs with the ``redis`` backend on a redis-server of the test's own and a throw-away
PostgreSQL database reached through a TCP proxy the test can cut. Values forged into Redis are
refused by every worker; records signed before a secret rotation still verify after it; and with
the database unreachable, every key cached in Redis is admitted by every worker, including
workers started after the database went away, while an uncached key gets 503.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy.engine import make_url

from app.domain.keys import ALPHABET, SECRET_LENGTH, checksum, digest
from tests.correctness.tcp_proxy import TcpProxy
from tests.support.databases import temporary_postgres_database
from tests.support.live_server import LiveServer, worker_of
from tests.support.redis_server import RedisServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

WORKERS = 4
KEY_PREFIX = "live:apikey:"
FIRST_SECRET = "live-test-first-record-secret"
SECOND_SECRET = "live-test-second-record-secret"


class ThreadedProxy:
    """``TcpProxy`` on an event loop of its own thread, for a synchronous test to cut at will."""

    def __init__(self, host: str, port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = TcpProxy(host, port)

    def _run(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        asyncio.run_coroutine_threadsafe(make(), self._loop).result(timeout=10)

    def start(self) -> None:
        self._run(self.proxy.start)

    def cut(self) -> None:
        self._run(self.proxy.stop)

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def proxied_database(postgres_url: str) -> Iterator[tuple[ThreadedProxy, str]]:
    with temporary_postgres_database(postgres_url) as url:
        target = make_url(url)
        proxy = ThreadedProxy(target.host or "127.0.0.1", target.port or 5432)
        proxy.start()
        try:
            yield proxy, target.set(port=proxy.proxy.port).render_as_string(hide_password=False)
        finally:
            proxy.close()


def forged_key(prefix: str) -> str:
    body = f"{prefix}_{''.join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))}"
    return body + checksum(body)


def active_value(prefix: str) -> bytes:
    return json.dumps({"apiKey": prefix, "active": True}, separators=(",", ":")).encode()


def answers_of_every_worker(server: LiveServer, key: str, timeout: float = 60.0) -> set[int]:
    """Status codes for ``key`` from fresh connections until every worker has answered."""
    statuses: set[int] = set()
    workers: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(workers) < WORKERS:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(workers)} of {WORKERS} workers answered")
        response = server.get("/v1/me", api_key=key)
        statuses.add(response.status_code)
        workers.add(worker_of(response))
    return statuses


def worker_pids(server: LiveServer) -> set[int]:
    assert server.process is not None
    pid = server.process.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return set()
    return {int(child) for child in children}


def replace_every_worker(server: LiveServer, timeout: float = 60.0) -> None:
    """SIGHUP: gunicorn starts new workers (fresh processes, empty memory) and stops the old."""
    old = worker_pids(server)
    assert server.process is not None and len(old) == WORKERS
    os.kill(server.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while True:
        current = worker_pids(server)
        if len(current) == WORKERS and not current & old:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"workers not replaced: {old} -> {current}")
        time.sleep(0.1)
    # The new workers answer once their app is loaded.
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while len(seen) < WORKERS:
        if time.monotonic() > deadline:
            raise AssertionError("the new workers did not all answer")
        response = server.get("/healthz")
        if response.status_code == 200:
            seen.add(worker_of(response))


def test_redis_is_a_cache_never_an_authority_on_every_worker(
    private_redis: RedisServerProcess, proxied_database: tuple[ThreadedProxy, str]
) -> None:
    proxy, database_url = proxied_database
    server = LiveServer(
        {
            "APIKEY_CACHE_BACKEND": "redis",
            "REDIS_URL": private_redis.url,
            "APIKEY_CACHE_REDIS_KEY_PREFIX": KEY_PREFIX,
            "APIKEY_CACHE_TTL_SECONDS": "600",
            "APIKEY_CACHE_HMAC_SECRET": FIRST_SECRET,
            "DATABASE_URL": database_url,
            "DATABASE_TIMEOUT_SECONDS": "1.0",
        },
        workers=WORKERS,
    )
    redis = Redis.from_url(private_redis.url, socket_timeout=5)
    try:
        admin_key = server.create_admin_key()
        admin_prefix = admin_key[:13]
        server.start()
        created = {}
        for name in ("cached", "uncached", "doomed"):
            response = server.post(
                "/v1/keys", api_key=admin_key, json_body={"name": name, "scopes": ["read"]}
            )
            assert response.status_code == 201, response.text
            created[name] = response.json()
        cached, uncached, doomed = created["cached"], created["uncached"], created["doomed"]
        assert server.get("/v1/me", api_key=cached["key"]).status_code == 200
        assert server.get("/v1/me", api_key=doomed["key"]).status_code == 200
        assert redis.exists(KEY_PREFIX + "rec:" + digest(cached["key"])) == 1

        # A forged key with the admin's public prefix, and a value forged for it.
        forged = forged_key(admin_prefix)
        redis.set(KEY_PREFIX + digest(forged), active_value(admin_prefix), ex=600)
        assert answers_of_every_worker(server, forged) == {401}
        # A revoked key whose tombstone is replaced by "active", with an unsigned record.
        revoked = server.post(f"/v1/keys/{doomed['prefix']}/revoke", api_key=admin_key)
        assert revoked.status_code == 200, revoked.text
        doomed_digest = digest(doomed["key"])
        redis.set(KEY_PREFIX + doomed_digest, active_value(doomed["prefix"]), ex=600)
        redis.set(
            KEY_PREFIX + "rec:" + doomed_digest,
            b"0" * 64
            + b'.{"p":"%s","n":"doomed","s":["admin"],"c":0,"e":null,"r":null,"u":9999999999}'
            % doomed["prefix"].encode(),
            ex=600,
        )
        assert answers_of_every_worker(server, doomed["key"]) == {401}
        assert answers_of_every_worker(server, admin_key) == {200}

        # Rotate the secret: new processes sign with the second, still verify the first.
        server.stop()
        server.env["APIKEY_CACHE_HMAC_SECRET"] = SECOND_SECRET
        server.env["APIKEY_CACHE_HMAC_PREVIOUS_SECRETS"] = FIRST_SECRET
        server.start()

        proxy.cut()
        # No worker has read these keys from the database: only the first secret's records
        # in Redis can admit them now.
        assert answers_of_every_worker(server, cached["key"]) == {200}
        assert answers_of_every_worker(server, admin_key) == {200}
        assert answers_of_every_worker(server, uncached["key"]) == {503}
        # Its value and record were both rewritten by the attacker: with the database away, a
        # worker that did not see the revocation cannot prove either way, and must not admit.
        assert answers_of_every_worker(server, doomed["key"]) <= {401, 503}

        replace_every_worker(server)
        assert answers_of_every_worker(server, cached["key"]) == {200}
        assert answers_of_every_worker(server, uncached["key"]) == {503}
        body = server.get("/v1/me", api_key=cached["key"]).json()
        assert body["prefix"] == cached["prefix"] and body["scopes"] == ["read"]

        # A whole restart of the service while the database is still away: serve skips the
        # migrations it cannot run and serves what Redis vouches for.
        server.stop()
        server.start()
        assert "is unreachable: serving without migrating" in server.log_text()
        assert answers_of_every_worker(server, cached["key"]) == {200}
        assert answers_of_every_worker(server, uncached["key"]) == {503}
    finally:
        redis.close()
        server.close()
