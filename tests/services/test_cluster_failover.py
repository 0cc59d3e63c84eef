"""The tiered invalidation channel across a cluster failover or a slot move: lost, flushed,
re-subscribed on the new owner.

A cluster of its own (the session's must not see a node die). The primary that owns the
channel's slot is killed outright; its replica takes over within about two node timeouts. Until
then the L1 must not be trusted, and once the listener subscribed on the new primary the L1
starts empty (invalidations published in the gap were lost) and invalidations reach it again.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace

import pytest
from redis.crc import key_slot

from app.clients.redis_topologies import build_cluster_client
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend
from tests.services.tiered_support import TieredFactory, eventually, ready
from tests.support.redis_cluster import RedisClusterProcesses

pytestmark = [pytest.mark.slow, pytest.mark.redis_server]

FAILOVER_SECONDS = 20.0
ACTIVE = SimpleNamespace(apiKey="game_AbCd1234", active=True)
REVOKED = SimpleNamespace(apiKey="game_AbCd1234", active=False)


@pytest.fixture
def doomed_cluster() -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses() as cluster:
        yield cluster


@pytest.fixture
async def two_processes(
    doomed_cluster: RedisClusterProcesses, tiered_factory: TieredFactory, key_prefix: str
) -> AsyncIterator[tuple[TieredApiKeyCacheBackend, TieredApiKeyCacheBackend]]:
    """Two tiered backends, each on a cluster client of its own, as two processes would be."""
    clients = [
        build_cluster_client(doomed_cluster.seed_pairs, socket_timeout_ms=500) for _ in range(2)
    ]
    try:
        holder = tiered_factory(clients[0], key_prefix)
        revoker = tiered_factory(clients[1], key_prefix)
        await ready(holder, revoker)
        yield holder, revoker
    finally:
        for client in clients:
            await client.aclose()


async def test_the_channel_primary_dies_and_the_l1_is_flushed_before_it_is_trusted_again(
    doomed_cluster: RedisClusterProcesses,
    two_processes: tuple[TieredApiKeyCacheBackend, TieredApiKeyCacheBackend],
) -> None:
    holder, revoker = two_processes
    cache_key = "ab" * 32
    await revoker.set(cache_key, ACTIVE, 60)
    assert await holder.get(cache_key) is not None and holder.peek(cache_key) is not None
    channel_owner = holder.listener.channel
    client = holder.shared.inner.client  # type: ignore[attr-defined]
    node = client.get_node_from_key(channel_owner)
    subscriptions_before = holder.listener.subscriptions

    doomed_cluster.kill_node(node.port)

    await eventually(lambda: not holder.l1.trusted, "the holder stops trusting its L1", 5.0)
    assert holder.peek(cache_key) is None  # untrusted: nothing is served from the L1
    await eventually(
        lambda: holder.listener.healthy and revoker.listener.healthy,
        "both listeners re-subscribed on the new primary",
        FAILOVER_SECONDS,
    )
    assert holder.listener.subscriptions > subscriptions_before
    assert len(holder.l1) == 0  # flushed on the new subscription
    new_owner = client.get_node_from_key(channel_owner)
    assert new_owner is not None and new_owner.port != node.port

    # The channel works again: a fresh copy in the holder's L1 is evicted by the revoker.
    second_key = "cd" * 32
    await revoker.set(second_key, ACTIVE, 60)
    assert await holder.get(second_key) is not None and holder.peek(second_key) is not None
    report = await revoker.invalidate(second_key, REVOKED, 60)
    assert holder.member_id in report.acknowledged_by
    assert holder.peek(second_key) is None


@pytest.fixture
def small_cluster() -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses(primaries=3, replicas_per_primary=0) as cluster:
        yield cluster


def _cli(port: int, *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=5, check=True
    )
    return result.stdout.strip()


async def test_a_slot_move_re_subscribes_the_listener_on_the_new_owner(
    small_cluster: RedisClusterProcesses, tiered_factory: TieredFactory, key_prefix: str
) -> None:
    clients = [
        build_cluster_client(small_cluster.seed_pairs, socket_timeout_ms=500) for _ in range(2)
    ]
    try:
        holder = tiered_factory(clients[0], key_prefix)
        revoker = tiered_factory(clients[1], key_prefix)
        await ready(holder, revoker)
        cache_key = "ef" * 32
        await revoker.set(cache_key, ACTIVE, 60)
        assert await holder.get(cache_key) is not None and holder.peek(cache_key) is not None
        before = holder.listener.subscriptions
        channel = holder.listener.channel
        slot = key_slot(channel.encode())
        source = clients[0].get_node_from_key(channel).port
        target = next(port for port in small_cluster.primaries() if port != source)
        source_id, target_id = _cli(source, "CLUSTER", "MYID"), _cli(target, "CLUSTER", "MYID")

        # The channel's slot (it holds no keys) moves to another primary, as resharding does.
        _cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        _cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        for port in (target, source):
            _cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)

        await eventually(
            lambda: (
                holder.listener.subscriptions > before
                and holder.listener.healthy
                and revoker.listener.healthy
            ),
            "both listeners re-subscribed on the slot's new owner",
            FAILOVER_SECONDS,
        )
        assert holder.peek(cache_key) is None  # flushed on the new subscription
        assert clients[0].get_node_from_key(channel).port == target

        await revoker.set(cache_key, ACTIVE, 60)
        assert await holder.get(cache_key) is not None and holder.peek(cache_key) is not None
        report = await revoker.invalidate(cache_key, REVOKED, 60)
        assert holder.member_id in report.acknowledged_by
        assert holder.peek(cache_key) is None
    finally:
        for client in clients:
            await client.aclose()
