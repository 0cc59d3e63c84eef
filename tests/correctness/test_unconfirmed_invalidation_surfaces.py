"""A revoke (or rotate) while Redis is down commits and tells the operator, over HTTP and CLI.

The answer is a success (the key is revoked in the database) carrying
``cache_invalidation.confirmed = false`` and why; never a 500 and never a silent success.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import fakeredis
import pytest
from redis.asyncio import Redis

from app.cli import main
from tests.correctness.http_app import served_app
from tests.support.databases import migrated_sqlite_url
from tests.support.redis_server import free_port


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return migrated_sqlite_url(tmp_path)


async def test_http_revoke_and_rotate_with_redis_down_report_unconfirmed_invalidation(
    sqlite_url: str,
    fake_server: fakeredis.FakeServer,
    fake_redis: Redis,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with served_app(
        redis_client=fake_redis,
        DATABASE_URL=sqlite_url,
        APIKEY_CACHE_BACKEND="redis",
        APIKEY_CACHE_REDIS_KEY_PREFIX=key_prefix,
    ) as served:
        doomed = await served.service.create("doomed", ["read"])
        rotated = await served.service.create("rotated", ["read"])
        for key in (served.admin, doomed, rotated):
            assert (await served.client.get("/v1/me", headers=served.auth(key))).status_code == 200
        fake_server.connected = False
        caplog.set_level(logging.INFO)

        revoke = await served.client.post(
            f"/v1/keys/{doomed.record.prefix}/revoke", headers=served.auth()
        )
        rotate = await served.client.post(
            f"/v1/keys/{rotated.record.prefix}/rotate", headers=served.auth()
        )

        assert revoke.status_code == 200
        assert revoke.json()["revoked_at"] is not None
        assert revoke.json()["cache_invalidation"]["confirmed"] is False
        assert "cache" in revoke.json()["cache_invalidation"]["detail"]
        assert rotate.status_code == 201
        assert rotate.json()["cache_invalidation"]["confirmed"] is False
        assert served.service.metrics.invalidation_failures == 2
        logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(doomed.record.prefix in message for message in logged)
        # This worker refuses the revoked key at once, Redis or not.
        me = await served.client.get("/v1/me", headers=served.auth(doomed))
        assert me.status_code == 401


def test_cli_revoke_with_redis_unreachable_warns_and_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database_url = migrated_sqlite_url(tmp_path)
    config = tmp_path / "redis-down.env"
    config.write_text(
        "APIKEY_CACHE_BACKEND=redis\n"
        f"REDIS_URL=redis://127.0.0.1:{free_port()}/0\n"  # nothing listens there
        f"DATABASE_URL={database_url}\n"
    )
    assert main(["keys", "create", "--name", "doomed", "--scope", "read", "--json",
                 "--config", str(config)]) == 0  # fmt: skip
    prefix = json.loads(capsys.readouterr().out)["prefix"]

    code = main(["keys", "revoke", prefix, "--json", "--config", str(config)])

    captured = capsys.readouterr()
    assert code == 0
    body = json.loads(captured.out)
    assert body["revoked_at"] is not None
    assert body["cache_invalidation"]["confirmed"] is False
    assert "warning: cache invalidation not confirmed" in captured.err
    assert "Traceback" not in captured.err

    assert main(["keys", "list", "--json", "--config", str(config)]) == 0
    listed = {row["prefix"]: row for row in json.loads(capsys.readouterr().out)["keys"]}
    assert listed[prefix]["revoked_at"] is not None
