"""``game-api cache clear`` on a Redis Cluster: every key under the prefix, on every primary,
goes; nothing else does (the session's 3-primary cluster, the console script as a subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from app.services.redis_cache_backend import escape_glob
from tests.cli.test_cli import Cli
from tests.support.redis_cluster import RedisClusterProcesses

pytestmark = [pytest.mark.slow, pytest.mark.redis_server]

KEYS_PER_KIND = 200


async def keys_on(client: RedisCluster, node: ClusterNode, pattern: str) -> set[bytes]:
    """Every key matching ``pattern`` on one node (a test may walk the whole keyspace)."""
    found: set[bytes] = set()
    cursor = 0
    while True:
        cursors, keys = await client.execute_command(
            "SCAN", cursor, "MATCH", pattern, "COUNT", 1_000, target_nodes=node
        )
        found.update(keys)
        cursor = int(cursors[node.name])
        if cursor == 0:
            return found


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    return cli


@pytest.mark.parametrize("backend", ["redis", "tiered"])
async def test_cache_clear_empties_the_prefix_on_every_primary_and_nothing_else(
    cli: Cli,
    tmp_path: Path,
    redis_cluster: RedisClusterProcesses,
    real_redis_cluster: RedisCluster,
    key_prefix: str,
    backend: str,
) -> None:
    config = tmp_path / "cluster.env"
    config.write_text(
        f"APIKEY_CACHE_BACKEND={backend}\n"
        "REDIS_TOPOLOGY=cluster\n"
        f"REDIS_CLUSTER_NODES={redis_cluster.seeds}\n"
        f"APIKEY_CACHE_REDIS_KEY_PREFIX={key_prefix}\n"
    )
    client = real_redis_cluster
    ours = [f"{key_prefix}{n:064x}" for n in range(KEYS_PER_KIND)]
    ours += [f"{key_prefix}rec:{{{key}}}" for key in ours[:50]]  # records, hash-tagged
    neighbour = key_prefix.rstrip(":") + "-neighbour:"
    foreign = [f"{neighbour}{n}" for n in range(KEYS_PER_KIND)] + [
        f"other:{key_prefix}{n}" for n in range(KEYS_PER_KIND)
    ]
    for key in ours:
        await client.set(key, b'{"apiKey":"game_AAAAAAAA","active":true}', ex=300)
    for key in foreign:
        await client.set(key, b"keep me", ex=300)
    primaries = client.get_primaries()
    assert len(primaries) == 3
    ours_pattern = escape_glob(key_prefix) + "*"
    for node in primaries:  # the seeding reached every primary, with both kinds of key
        assert await keys_on(client, node, ours_pattern)
        assert any(client.get_node_from_key(key) is node for key in foreign)

    try:
        output = cli.ok("cache", "clear", "--config", str(config))

        assert key_prefix in output
        for node in primaries:
            assert await keys_on(client, node, ours_pattern) == set()
        for key in foreign:
            assert await client.get(key) == b"keep me", key
    finally:
        await client.delete(*foreign)
