"""The pluggable cache in front of API-key lookup.

Every backend caches the resolved ``(apiKey, active)`` value of a key, keyed by the sha256 hex
digest of the key's plaintext, so no backend ever holds key material.

* ``InMemoryApiKeyCacheBackend`` — a per-process dict: a hit is a dict lookup, but a revocation
  reaches other worker processes only when their entry's TTL runs out.
* ``RedisApiKeyCacheBackend`` — one keyspace shared by every worker and host: a revocation is
  seen by the next request anywhere, at the price of one Redis round trip per hit.
* ``build_apikey_cache_backend`` — picks one by name, falling back to memory (with a warning)
  when Redis is asked for without a URL, so a misconfigured deploy still authenticates.

Beyond the documented protocol both backends offer ``add`` (fill only when absent) and
``invalidate`` (overwrite with a replacement everywhere), which the service uses to close the
cache-aside race between a slow fill and a revocation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.clients.redis_client import build_redis_client
from app.services.invalidation import InvalidationReport

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "game:apikey:"
_MAX_VALUE_BYTES = 512
# Small steps: each SCAN and UNLINK of a step runs inside Redis's single thread, so the step
# size bounds how long any other client waits behind a clear.
_SCAN_COUNT = 250
_GLOB_SPECIAL = "\\*?[]"


class ApiKeyCacheBackend(Protocol):
    """What every key-lookup cache offers; values are ``SimpleNamespace(apiKey, active)``."""

    async def get(self, cache_key: str) -> SimpleNamespace | None: ...

    async def set(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> None: ...

    async def delete(self, cache_key: str) -> None: ...

    async def clear(self) -> None: ...


def _entry(value: SimpleNamespace) -> SimpleNamespace:
    """A private copy, so a caller mutating what it passed or got cannot change the cache."""
    return SimpleNamespace(apiKey=value.apiKey, active=bool(value.active))


class InMemoryApiKeyCacheBackend:
    """Per-process cache: a dict with monotonic-clock expiry and lazy eviction.

    It is bounded (least-recently-used entries go first beyond ``max_entries``) so that a
    process serving many keys cannot grow without limit. The asyncio lock is created lazily, on
    first use inside a running loop, and ``sync_clear`` drops it: a test that runs the same
    instance on several event loops never meets a lock bound to another loop.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._store: OrderedDict[str, tuple[float, SimpleNamespace]] = OrderedDict()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    def __len__(self) -> int:
        return len(self._store)

    def peek(self, cache_key: str) -> SimpleNamespace | None:
        """Synchronous lookup for the request path: the stored value itself, not a copy.

        Callers must treat it as read-only (``get`` hands out copies). No lock is needed: the
        dict is only touched from the event-loop thread.
        """
        item = self._store.get(cache_key)
        if item is None:
            return None
        expires_at, value = item
        if expires_at <= time.monotonic():
            del self._store[cache_key]
            return None
        self._store.move_to_end(cache_key)
        return value

    def remaining_ttl(self, cache_key: str) -> float | None:
        """Seconds the entry has left, or ``None`` when absent or expired."""
        item = self._store.get(cache_key)
        if item is None:
            return None
        left = item[0] - time.monotonic()
        return left if left > 0 else None

    def put(self, cache_key: str, value: SimpleNamespace, ttl_seconds: float) -> None:
        """Synchronous insert with LRU eviction; a no-op for ``ttl_seconds <= 0``."""
        if ttl_seconds <= 0:
            return
        self._store[cache_key] = (time.monotonic() + ttl_seconds, _entry(value))
        self._store.move_to_end(cache_key)
        while len(self._store) > self._max_entries:
            self._store.popitem(last=False)

    async def get(self, cache_key: str) -> SimpleNamespace | None:
        value = self.peek(cache_key)
        return None if value is None else _entry(value)

    async def set(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> None:
        async with self._get_lock():
            self.put(cache_key, value, ttl_seconds)

    async def add(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> bool:
        """Store only when no live entry exists; ``True`` when stored."""
        if ttl_seconds <= 0:
            return False
        async with self._get_lock():
            if self.peek(cache_key) is not None:
                return False
            self.put(cache_key, value, ttl_seconds)
            return True

    async def invalidate(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> InvalidationReport:
        """Replace this process's copy; other workers keep theirs until their TTL."""
        async with self._get_lock():
            self._store.pop(cache_key, None)
            if replacement is not None:
                self.put(cache_key, replacement, ttl_seconds)
        return InvalidationReport(
            confirmed=True, scope="process", detail="this worker only; others within the TTL"
        )

    async def delete(self, cache_key: str) -> None:
        async with self._get_lock():
            self._store.pop(cache_key, None)

    def sync_clear(self) -> None:
        """Empty the store now and forget the lock (it may belong to a loop that is gone)."""
        self._store.clear()
        self._lock = None
        self._lock_loop = None

    async def clear(self) -> None:
        self.sync_clear()


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


def decode_value(raw: Any) -> SimpleNamespace | None:
    """Decode our JSON; anything else (foreign, corrupt, oversized) gives ``None``."""
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

    def __init__(self, client: Redis, key_prefix: str = DEFAULT_KEY_PREFIX) -> None:
        if not key_prefix:
            raise ValueError("key_prefix must not be empty: clear() would touch foreign keys")
        self._client = client
        self._key_prefix = key_prefix

    @property
    def client(self) -> Redis:
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
        while millions of entries go.
        """
        pattern = escape_glob(self._key_prefix) + "*"
        cursor: int = 0
        while True:
            cursor, keys = await self._client.scan(cursor=cursor, match=pattern, count=_SCAN_COUNT)
            if keys:
                await self._client.unlink(*keys)
            if cursor == 0:
                break


def build_apikey_cache_backend(
    backend_name: str, redis_url: str | None, redis_key_prefix: str = DEFAULT_KEY_PREFIX
) -> ApiKeyCacheBackend:
    """Pick a backend by name; ``"redis"`` or ``"tiered"`` without a URL falls back to memory
    with a warning.
    """
    if backend_name == "memory":
        return InMemoryApiKeyCacheBackend()
    if backend_name in ("redis", "tiered"):
        if not redis_url:
            logger.warning(
                "APIKEY_CACHE_BACKEND=%s but REDIS_URL is not set: using the in-memory cache",
                backend_name,
            )
            return InMemoryApiKeyCacheBackend()
        shared = RedisApiKeyCacheBackend(build_redis_client(redis_url), key_prefix=redis_key_prefix)
        if backend_name == "redis":
            return shared
        # Imported here: the tiered backend is built on this module.
        from app.services.circuit_breaker import CircuitBreakingCacheBackend
        from app.services.tiered_cache_backend import TieredApiKeyCacheBackend

        return TieredApiKeyCacheBackend(CircuitBreakingCacheBackend(shared))
    raise ValueError(
        f"unknown API-key cache backend {backend_name!r}: expected 'memory', 'redis' or 'tiered'"
    )
