"""``RedisApiKeyCacheBackend``: one keyspace shared by every worker and host.

Values are compact JSON ``{"apiKey":<prefix>,"active":<bool>}`` written with ``SET ... EX``;
anything else found under the prefix (foreign, corrupt, oversized, another type) is a miss and
is removed, never an exception. ``clear`` walks only the prefix with bounded ``SCAN`` steps.

Every command names one key, so the backend runs unchanged on a Redis Cluster (each command goes
to the primary of its key's slot); only ``clear`` must know the topology, since ``SCAN`` walks one
node's keyspace: on a cluster it walks every primary in turn.
"""

from __future__ import annotations

import json
import logging
import re
from types import SimpleNamespace
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

from app.clients.redis_client import RedisClient
from app.services.cache_protocol import InvalidationReport

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "game:apikey:"
_MAX_VALUE_BYTES = 512
# Small steps: each SCAN and UNLINK of a step runs inside Redis's single thread, so the step
# size bounds how long any other client waits behind a clear.
_SCAN_COUNT = 250
_GLOB_SPECIAL = "\\*?[]"


def escape_glob(text: str) -> str:
    """Escape Redis glob metacharacters so a prefix matches only itself."""
    return "".join("\\" + char if char in _GLOB_SPECIAL else char for char in text)


def encode_value(value: SimpleNamespace) -> bytes:
    """The compact JSON stored in Redis: ``{"apiKey":"<prefix>","active":true}``."""
    return json.dumps(
        {"apiKey": value.apiKey, "active": bool(value.active)}, separators=(",", ":")
    ).encode("utf-8")


def is_wrong_type(reply: object) -> bool:
    """Whether ``reply`` is Redis refusing a GET because a hash, list, ... sits under the key."""
    return isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE")


# What ``encode_value`` writes for a key's public prefix, which JSON writes without escapes: read
# by one match instead of the JSON parser and the shape checks, since a shared hit reads one.
_CANONICAL_VALUE = re.compile(rb'\{"apiKey":"([0-9A-Za-z_]{1,64})","active":(true|false)\}')


def decode_value(raw: Any) -> SimpleNamespace | None:
    """Decode our JSON; anything else (foreign, corrupt, oversized) gives ``None``."""
    if isinstance(raw, bytes):
        canonical = _CANONICAL_VALUE.fullmatch(raw)
        if canonical is not None:
            return SimpleNamespace(
                apiKey=canonical[1].decode("ascii"), active=canonical[2] == b"true"
            )
    if not isinstance(raw, bytes | str) or len(raw) > _MAX_VALUE_BYTES:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if (
        not isinstance(data, dict)
        or set(data) != {"apiKey", "active"}
        or not isinstance(data["apiKey"], str)
        or not isinstance(data["active"], bool)
    ):
        return None
    return SimpleNamespace(apiKey=data["apiKey"], active=data["active"])


class RedisApiKeyCacheBackend:
    """One keyspace shared by every worker and host, under ``key_prefix``."""

    def __init__(self, client: RedisClient, key_prefix: str = DEFAULT_KEY_PREFIX) -> None:
        if not key_prefix:
            raise ValueError("key_prefix must not be empty: clear() would touch foreign keys")
        self._client = client
        self._key_prefix = key_prefix

    @property
    def client(self) -> RedisClient:
        return self._client

    @property
    def key_prefix(self) -> str:
        return self._key_prefix

    def redis_key(self, cache_key: str) -> str:
        return self._key_prefix + cache_key

    async def get(self, cache_key: str) -> SimpleNamespace | None:
        key = self.redis_key(cache_key)
        raw: bytes | str | ResponseError | None
        try:
            raw = await self._client.get(key)
        except ResponseError as exc:
            # A foreign type under our prefix is garbage like any other, not an outage.
            if not is_wrong_type(exc):
                raise
            raw = exc
        if raw is None:
            return None
        value = decode_value(raw)
        if value is None:
            logger.warning("removing an unreadable value under the API-key cache prefix")
            await self._client.delete(key)
        return value

    async def get_with_ttl(self, cache_key: str) -> tuple[SimpleNamespace | None, float]:
        """The value and its remaining TTL in seconds, in one round trip (for an L1 above)."""
        key = self.redis_key(cache_key)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, pttl = await pipe.execute(raise_on_error=False)
        if isinstance(raw, Exception) and not is_wrong_type(raw):
            raise raw
        if isinstance(pttl, Exception):
            raise pttl
        if raw is None:
            return None, 0.0
        value = decode_value(raw)
        if value is None:
            logger.warning("removing an unreadable value under the API-key cache prefix")
            await self._client.delete(key)
            return None, 0.0
        return value, max(int(pttl), 0) / 1000.0

    async def set(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            return
        await self._client.set(self.redis_key(cache_key), encode_value(value), ex=ttl_seconds)

    async def add(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> bool:
        """``SET NX EX``: a fill never overwrites a newer entry or a revocation tombstone."""
        if ttl_seconds <= 0:
            return False
        stored = await self._client.set(
            self.redis_key(cache_key), encode_value(value), ex=ttl_seconds, nx=True
        )
        return bool(stored)

    async def invalidate(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> InvalidationReport:
        """Overwrite (or delete) the shared entry; every worker reads it on its next request."""
        if replacement is not None and ttl_seconds > 0:
            await self._client.set(
                self.redis_key(cache_key), encode_value(replacement), ex=ttl_seconds
            )
        else:
            await self._client.delete(self.redis_key(cache_key))
        return InvalidationReport(confirmed=True, scope="shared", detail="shared cache updated")

    async def delete(self, cache_key: str) -> None:
        await self._client.delete(self.redis_key(cache_key))

    async def clear(self) -> None:
        """Delete only our keys: ``SCAN MATCH prefix* COUNT n`` plus batched ``UNLINK``.

        Never ``KEYS`` or ``FLUSHDB``: each step is bounded, so other clients keep being served
        while millions of entries go. On a cluster, ``SCAN`` sees one node's keys, so every
        primary is walked in turn (a replica holds copies of its primary's keys, nothing else).
        """
        pattern = escape_glob(self._key_prefix) + "*"
        client = self._client
        if isinstance(client, RedisCluster):
            await client.initialize()
            for node in client.get_primaries():
                await _clear_node(client, node, pattern)
            return
        cursor: int = 0
        while True:
            cursor, keys = await client.scan(cursor=cursor, match=pattern, count=_SCAN_COUNT)
            if keys:
                await client.unlink(*keys)
            if cursor == 0:
                break


async def _clear_node(client: RedisCluster, node: ClusterNode, pattern: str) -> None:
    """The bounded ``SCAN`` loop on one primary; ``UNLINK`` per batch (the client splits a
    batch by slot, and every slot of these keys is on this node)."""
    cursor: int = 0
    while True:
        reply = await client.execute_command(
            "SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT, target_nodes=node
        )
        # The cluster client answers a targeted SCAN as ``({node name: cursor}, keys)``.
        cursors, keys = reply
        cursor = int(cursors[node.name]) if isinstance(cursors, dict) else int(cursors)
        if keys:
            await client.unlink(*keys)
        if cursor == 0:
            break
