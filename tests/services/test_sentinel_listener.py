"""On Sentinel, the tiered listener follows the primary across a failover.

``SENTINEL FAILOVER`` demotes the old primary to a replica without closing its clients, and a
replica accepts subscriptions: without asking the sentinels, the listener would stay on the old
server. Here it must move to the new primary, and flush its L1 on the way.
One primary, one replica, one sentinel (quorum 1): the smallest set that fails over.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.clients.redis_topologies import build_sentinel_client
from tests.services.tiered_support import TieredFactory, eventually, ready
from tests.support.redis_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis_server]

SERVICE = "cache"


def _answers(port: int, *command: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *command],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout


@pytest.fixture
def sentinel_set() -> Iterator[tuple[int, int, int]]:
    """``(primary port, replica port, sentinel port)``, all stopped at teardown."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="game-api-sentinel-"))
    primary, replica, sentinel = free_port(), free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        processes.append(
            subprocess.Popen(
                ["redis-server", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )

    try:
        common = ["--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
        start("--port", str(primary), *common, "--dbfilename", "primary.rdb")
        start(
            "--port", str(replica), *common, "--dbfilename", "replica.rdb",
            "--replicaof", "127.0.0.1", str(primary),
        )  # fmt: skip
        config = workdir / "sentinel.conf"
        config.write_text(
            f"port {sentinel}\nbind 127.0.0.1\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        start(str(config), "--sentinel")
        deadline = time.monotonic() + 20
        while not (
            "master_link_status:up" in _answers(replica, "INFO", "replication")
            and "slaves=1" in _answers(sentinel, "INFO", "sentinel")
        ):
            assert time.monotonic() < deadline, "the sentinel set did not come up"
            time.sleep(0.05)
        yield primary, replica, sentinel
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


async def failover(sentinels: Redis) -> None:
    """``SENTINEL FAILOVER``, asked again while the sentinel does not yet rate the replica a
    good candidate (``NOGOODSLAVE``: it has not refreshed the replica's state since it found it)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            assert await sentinels.execute_command("SENTINEL", "FAILOVER", SERVICE)
            return
        except ResponseError as exc:
            if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def test_the_listener_moves_to_the_new_primary_and_flushes_its_l1(
    sentinel_set: tuple[int, int, int], tiered_factory: TieredFactory, key_prefix: str
) -> None:
    primary, replica, sentinel = sentinel_set
    client = build_sentinel_client(
        [("127.0.0.1", sentinel)], SERVICE, socket_timeout_ms=500, connect_timeout_ms=500
    )
    sentinels = Redis(port=sentinel)
    try:
        tiered = tiered_factory(client, key_prefix)
        await ready(tiered)
        cache_key = "ab" * 32
        await tiered.set(cache_key, SimpleNamespace(apiKey="game_AbCd1234", active=True), 60)
        assert await tiered.get(cache_key) is not None and tiered.peek(cache_key) is not None
        before = tiered.listener.subscriptions

        await failover(sentinels)

        await eventually(
            lambda: tiered.listener.subscriptions > before and tiered.listener.healthy,
            "the listener re-subscribed",
            20.0,
        )
        assert len(tiered.l1) == 0  # flushed before it was trusted again
        connection = tiered.listener._client.connection_pool.master_address  # type: ignore[union-attr]
        assert connection == ("127.0.0.1", replica)
        # Its subscription is on the new primary, and (once the old server has seen the old
        # connection close) none is left on the old one.
        channel = tiered.listener.channel
        new_primary, old_primary = Redis(port=replica), Redis(port=primary)
        try:
            deadline = time.monotonic() + 10
            while True:
                on_new = dict(await new_primary.pubsub_numsub(channel))[channel.encode()]
                on_old = dict(await old_primary.pubsub_numsub(channel))[channel.encode()]
                if (on_new, on_old) == (1, 0):
                    break
                assert time.monotonic() < deadline, f"subscribers new/old: {on_new}/{on_old}"
                await asyncio.sleep(0.02)
        finally:
            await new_primary.aclose()
            await old_primary.aclose()
    finally:
        await sentinels.aclose()
        await client.aclose()
