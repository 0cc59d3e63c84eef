"""What only a real Redis Cluster can show: one slot per key pair, sharded invalidations, and
``clear`` on every primary.

These share the session's cluster (``redis_cluster``); nothing here kills a node. The failover
of the invalidation channel is in ``test_cluster_failover.py`` on a cluster of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from app.clients.redis_topologies import build_cluster_client
from app.repositories.base import ApiKeyRecord
from app.services.cache_factories import guard_cache, invalidation_channel
from app.services.record_cache import SignedRecordCache
from app.services.redis_cache_backend import RedisApiKeyCacheBackend, encode_value
from tests.services.tiered_support import TieredFactory, ready
from tests.support.redis_cluster import RedisClusterProcesses

pytestmark = [pytest.mark.slow, pytest.mark.redis_server]

SECRET = b"cluster-test-record-signing-secret"


def record(cache_key: str) -> ApiKeyRecord:
    return ApiKeyRecord(
        prefix="game_AbCd1234",
        name="cluster",
        scopes=("read",),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        digest=cache_key,
    )


def records_on(client: RedisCluster, key_prefix: str) -> SignedRecordCache:
    guard = guard_cache(RedisApiKeyCacheBackend(client, key_prefix=key_prefix))
    return SignedRecordCache(guard, client, key_prefix, secret=SECRET)


@pytest.mark.parametrize("prefix_tag", ["", "{game}:"])
async def test_value_and_record_share_a_slot_and_fill_both_or_neither(
    real_redis_cluster: RedisCluster, key_prefix: str, prefix_tag: str
) -> None:
    prefix = prefix_tag + key_prefix
    records = records_on(real_redis_cluster, prefix)
    cache_key = "ab" * 32
    assert key_slot(records.value_key(cache_key).encode()) == key_slot(
        records.record_key(cache_key).encode()
    )
    value = SimpleNamespace(apiKey="game_AbCd1234", active=True)

    assert await records.fill(cache_key, value, record(cache_key), 60)
    read_value, read_record = await records.read(cache_key)
    assert read_value is not None and read_value.active is True
    assert read_record is not None and read_record.name == "cluster"

    # A tombstone (another value) stops the fill: neither key is written.
    other = "cd" * 32
    tombstone = SimpleNamespace(apiKey="game_AbCd1234", active=False)
    await real_redis_cluster.set(records.value_key(other), encode_value(tombstone), ex=60)
    assert not await records.fill(other, value, record(other), 60)
    assert await real_redis_cluster.get(records.record_key(other)) is None
    await RedisApiKeyCacheBackend(real_redis_cluster, key_prefix=prefix).clear()


def test_a_prefix_that_would_split_the_pair_is_refused(real_redis_cluster: RedisCluster) -> None:
    with pytest.raises(ValueError, match="unmatched"):
        records_on(real_redis_cluster, "game}:apikey:")


async def test_an_invalidation_reaches_every_l1_over_a_sharded_channel(
    redis_cluster: RedisClusterProcesses,
    real_redis_cluster: RedisCluster,
    tiered_factory: TieredFactory,
    key_prefix: str,
) -> None:
    other_client = build_cluster_client(redis_cluster.seed_pairs, socket_timeout_ms=5_000)
    try:
        holder = tiered_factory(other_client, key_prefix)
        revoker = tiered_factory(real_redis_cluster, key_prefix)
        await ready(holder, revoker)
        channel = holder.listener.channel
        assert channel == invalidation_channel(holder.shared.inner)  # type: ignore[arg-type]
        assert channel.endswith("{invalidate}")

        # Both listeners are sharded subscribers on the channel's primary, none classic.
        owner = real_redis_cluster.get_node_from_key(channel)
        assert owner is not None
        sharded = await real_redis_cluster.execute_command(
            "PUBSUB SHARDNUMSUB", channel, target_nodes=owner
        )
        classic = await real_redis_cluster.execute_command(
            "PUBSUB NUMSUB", channel, target_nodes=owner
        )
        assert _count(sharded) == 2
        assert _count(classic) == 0

        cache_key = "ef" * 32
        await revoker.set(cache_key, SimpleNamespace(apiKey="game_AbCd1234", active=True), 60)
        assert await holder.get(cache_key) is not None
        assert holder.peek(cache_key) is not None  # in the holder's L1

        report = await revoker.invalidate(
            cache_key, SimpleNamespace(apiKey="game_AbCd1234", active=False), 60
        )
        assert holder.member_id in report.acknowledged_by
        assert holder.peek(cache_key) is None
        revoked = await holder.get(cache_key)
        assert revoked is not None and revoked.active is False
    finally:
        await other_client.aclose()


def _count(reply: object) -> int:
    """``PUBSUB (SHARD)NUMSUB`` of one channel, as redis-py parses it: ``[(channel, n)]``."""
    assert isinstance(reply, list) and len(reply) == 1
    _channel, count = reply[0]
    return int(count)


async def test_clear_walks_every_primary_and_spares_foreign_keys(
    redis_cluster: RedisClusterProcesses, real_redis_cluster: RedisCluster, key_prefix: str
) -> None:
    backend = RedisApiKeyCacheBackend(real_redis_cluster, key_prefix=key_prefix)
    ours = [f"{n:064x}" for n in range(300)]
    for cache_key in ours:
        await backend.set(cache_key, SimpleNamespace(apiKey="game_AbCd1234", active=True), 60)
    foreign = [f"foreign:{key_prefix}{n}" for n in range(60)]
    for key in foreign:
        await real_redis_cluster.set(key, b"keep", ex=60)
    primaries = real_redis_cluster.get_primaries()
    assert len(primaries) == 3
    for node in primaries:  # both kinds of key live on every primary
        assert any(real_redis_cluster.get_node_from_key(k) is node for k in foreign)
        assert any(real_redis_cluster.get_node_from_key(backend.redis_key(k)) is node for k in ours)

    await backend.clear()

    for cache_key in ours:
        assert await real_redis_cluster.exists(backend.redis_key(cache_key)) == 0
    for key in foreign:
        assert await real_redis_cluster.get(key) == b"keep"
    await real_redis_cluster.delete(*foreign)
