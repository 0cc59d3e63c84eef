"""``SignedRecordCache``: a key's record in Redis, authenticated, beside the documented value.

Redis is a cache, never an authority. Anyone who can write to it can write the documented value
``{"apiKey":<prefix>,"active":true}`` under any digest, and prefixes are public; so a value alone
must never admit a key. Beside each value the service stores the key's record (prefix, name,
scopes, dates) under ``<key_prefix>rec:<digest>``, MACed with HMAC-SHA256 over the digest it was
written for and the payload. A worker admits from Redis only when that MAC verifies under a
secret of this deployment, so the record is bound to the very cache key that was looked up: a
forged key's digest cannot borrow an admin's record, and a record copied under another digest no
longer verifies. A verified record also lets a worker that never read the key from the database
(a fresh process, during a database outage) admit it with its scopes and expiry checked.

Every signed payload carries the time it stops being valid (the fill's TTL), so a captured entry
replayed later, or re-written without a TTL, is refused once that time has passed.

On a Redis Cluster the record key carries the value key as its hash tag,
``<key_prefix>rec:{<key_prefix><digest>}``, so value and record share a slot (and a node): the
one-round-trip ``MGET`` and the both-or-neither fill need that. Elsewhere the key stays
``<key_prefix>rec:<digest>``.

Anything unreadable under either key (foreign, corrupt, unsigned, signed with an unknown secret)
is a miss and is removed, never an exception. Every call goes through the circuit breaker of
the Redis backend beside it, so a Redis outage costs a database lookup, never a valid key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import WatchError

from app.clients.redis_client import RedisClient
from app.repositories.base import ApiKeyRecord
from app.services.bounded_ttl_map import BoundedTtlMap
from app.services.guarded_cache_backend import CircuitBreakingCacheBackend
from app.services.redis_cache_backend import decode_value, encode_value

logger = logging.getLogger(__name__)

RECORD_KEY_INFIX = "rec:"
MIN_SECRET_BYTES = 16
_MAC_CONTEXT = b"game-api/apikey-record/v1\x00"
_MAC_HEX_LENGTH = 64
_MAX_RECORD_BYTES = 2048
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_PAYLOAD_FIELDS = frozenset({"p", "n", "s", "c", "e", "r", "u"})

# The cluster's fill: the same decision as the WATCH/MULTI fill below, taken inside Redis in one
# step. KEYS[1] the value, KEYS[2] the record (same slot); ARGV: value, sealed record, TTL.
_FILL_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
local stored = redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3], 'NX')
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3], 'NX')
if stored then return 1 end
return 0
"""


def _micros(moment: datetime) -> int:
    """Exact microseconds since the epoch (no float rounding: the record must round-trip)."""
    return (moment - _EPOCH) // _MICROSECOND


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _optional_micros(moment: datetime | None) -> int | None:
    return None if moment is None else _micros(moment)


def _optional_moment(micros: object) -> datetime | None:
    if micros is None:
        return None
    if not isinstance(micros, int) or isinstance(micros, bool):
        raise ValueError("not a timestamp")
    return _moment(micros)


_OPENED_MAX_ENTRIES = 10_000
_OPENED_TTL_SECONDS = 60.0


class SignedRecordCache:
    """Authenticated key records under ``<key_prefix>rec:<digest>``, read with their value.

    ``secret`` signs every write; ``previous_secrets`` are also accepted when verifying, so a
    secret can be rotated without turning every cached record into a miss at once.
    """

    def __init__(
        self,
        guard: CircuitBreakingCacheBackend,
        client: RedisClient,
        key_prefix: str,
        *,
        secret: bytes,
        previous_secrets: Sequence[bytes] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        for each in (secret, *previous_secrets):
            if len(each) < MIN_SECRET_BYTES:
                raise ValueError(f"an HMAC secret must be at least {MIN_SECRET_BYTES} bytes")
        self._guard = guard
        self._client = client
        self._key_prefix = key_prefix
        self._on_cluster = isinstance(client, RedisCluster)
        if self._on_cluster:
            sample = "0" * 64
            if key_slot(self.value_key(sample).encode()) != key_slot(
                self.record_key(sample).encode()
            ):
                raise ValueError(
                    "on a Redis Cluster the key prefix must not contain an unmatched '{' or '}'"
                )
        self._secret = secret
        self._verifying = (secret, *previous_secrets)
        self._clock = clock
        # Raw sealed bytes already verified, with their validity, digest and record: a hit on
        # a hot key then costs a dict lookup instead of an HMAC and a JSON parse. (A secret
        # withdrawn from the verifying set stops counting for these within _OPENED_TTL_SECONDS.)
        self._opened: BoundedTtlMap[bytes, tuple[float, str, ApiKeyRecord]] = BoundedTtlMap(
            _OPENED_MAX_ENTRIES
        )

    def value_key(self, cache_key: str) -> str:
        """Where the documented value lives (the Redis backend's key for ``cache_key``)."""
        return self._key_prefix + cache_key

    def record_key(self, cache_key: str) -> str:
        if self._on_cluster:
            # The value key as hash tag: both keys hash alike, whatever the prefix's own tag.
            return f"{self._key_prefix}{RECORD_KEY_INFIX}{{{self.value_key(cache_key)}}}"
        return self._key_prefix + RECORD_KEY_INFIX + cache_key

    # -- sealing --------------------------------------------------------------------------------

    def _mac(self, secret: bytes, cache_key: str, payload: bytes) -> str:
        message = _MAC_CONTEXT + cache_key.encode("ascii") + b"\x00" + payload
        return hmac.new(secret, message, hashlib.sha256).hexdigest()

    def seal(self, cache_key: str, record: ApiKeyRecord, ttl_seconds: int) -> bytes:
        """``<hex MAC>.<compact JSON>``: the MAC covers the digest and the payload."""
        payload = json.dumps(
            {
                "p": record.prefix,
                "n": record.name,
                "s": list(record.scopes),
                "c": _micros(record.created_at),
                "e": _optional_micros(record.expires_at),
                "r": _optional_micros(record.revoked_at),
                "u": int(self._clock()) + ttl_seconds,
            },
            separators=(",", ":"),
        ).encode("utf-8")
        return self._mac(self._secret, cache_key, payload).encode("ascii") + b"." + payload

    def open(self, cache_key: str, raw: object) -> ApiKeyRecord | None:
        """The record sealed for ``cache_key``, or ``None`` if ``raw`` is not one, or has expired.

        The MAC is checked before the payload is parsed: nothing unauthenticated is decoded.
        """
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        if not isinstance(raw, bytes) or len(raw) > _MAX_RECORD_BYTES:
            return None
        opened = self._opened.get(raw)
        if opened is not None:
            # These very bytes verified before, for this digest: skip the MAC and the JSON. The
            # record's own validity still applies (it is checked here, as on first opening).
            valid_until, digest, known = opened
            return known if digest == cache_key and self._clock() < valid_until else None
        record = self._verify_and_decode(cache_key, raw)
        if record is not None:
            self._opened.put(raw, (self._valid_until(raw), cache_key, record), _OPENED_TTL_SECONDS)
        return record

    def _valid_until(self, raw: bytes) -> float:
        data = json.loads(raw[_MAC_HEX_LENGTH + 1 :])
        return float(data["u"])

    def _verify_and_decode(self, cache_key: str, raw: bytes) -> ApiKeyRecord | None:
        mac = raw[:_MAC_HEX_LENGTH]
        dot = raw[_MAC_HEX_LENGTH : _MAC_HEX_LENGTH + 1]
        payload = raw[_MAC_HEX_LENGTH + 1 :]
        if dot != b"." or not cache_key.isascii():
            return None
        try:
            presented = mac.decode("ascii")
        except UnicodeDecodeError:
            return None
        if not any(
            hmac.compare_digest(presented, self._mac(secret, cache_key, payload))
            for secret in self._verifying
        ):
            return None
        try:
            return self._decode_payload(cache_key, json.loads(payload))
        except (ValueError, TypeError, OverflowError):
            return None

    def _decode_payload(self, cache_key: str, data: Any) -> ApiKeyRecord | None:
        if not isinstance(data, dict) or set(data) != _PAYLOAD_FIELDS:
            return None
        valid_until = data["u"]
        if not isinstance(valid_until, int) or self._clock() >= valid_until:
            return None
        prefix, name, scopes = data["p"], data["n"], data["s"]
        if not (
            isinstance(prefix, str)
            and isinstance(name, str)
            and isinstance(scopes, list)
            and all(isinstance(scope, str) for scope in scopes)
        ):
            return None
        created_at = _optional_moment(data["c"])
        if created_at is None:
            return None
        return ApiKeyRecord(
            prefix=prefix,
            name=name,
            scopes=tuple(scopes),
            created_at=created_at,
            expires_at=_optional_moment(data["e"]),
            revoked_at=_optional_moment(data["r"]),
            digest=cache_key,
        )

    # -- Redis ----------------------------------------------------------------------------------

    def read(self, cache_key: str) -> Awaitable[tuple[SimpleNamespace | None, ApiKeyRecord | None]]:
        """The documented value and the verified record, in one round trip (``MGET``).

        ``(None, None)`` when Redis cannot be reached: a miss, never an error. (The guard's
        awaitable itself, not a coroutine awaiting it: this is every shared hit's path.)
        """
        return self._guard.attempt(lambda: self._read(cache_key), (None, None))

    async def _read(self, cache_key: str) -> tuple[SimpleNamespace | None, ApiKeyRecord | None]:
        value_key, record_key = self.value_key(cache_key), self.record_key(cache_key)
        # ``execute_command`` rather than ``mget``, whose function-local import and argument
        # normalising cost several microseconds per call in redis-py 8.1.
        raw_value, raw_record = await self._client.execute_command(
            "MGET", value_key, record_key, keys=[value_key, record_key]
        )
        value = None if raw_value is None else decode_value(raw_value)
        record = None if raw_record is None else self.open(cache_key, raw_record)
        unreadable = []
        if raw_value is not None and value is None:
            unreadable.append(value_key)
        if raw_record is not None and record is None:
            unreadable.append(record_key)
        if unreadable:
            logger.warning("removing an unreadable or unauthenticated API-key cache entry")
            await self._client.delete(*unreadable)
        return value, record

    async def read_record(self, cache_key: str) -> ApiKeyRecord | None:
        """The verified record alone (for a cache whose value was read elsewhere, e.g. an L1)."""
        return await self._guard.attempt(lambda: self._read_record(cache_key), None)

    async def _read_record(self, cache_key: str) -> ApiKeyRecord | None:
        record_key = self.record_key(cache_key)
        raw = await self._client.get(record_key)
        if raw is None:
            return None
        record = self.open(cache_key, raw)
        if record is None:
            logger.warning("removing an unreadable or unauthenticated API-key record entry")
            await self._client.delete(record_key)
        return record

    async def fill(
        self, cache_key: str, value: SimpleNamespace, record: ApiKeyRecord, ttl_seconds: int
    ) -> bool:
        """``SET NX EX`` the documented value and ``SET EX`` the record, in one round trip.

        Returns whether the value was stored: the fill stays add-only on the value, so it never
        overwrites a revocation tombstone. The record is always written, since it only ever
        narrows what the value admits (a tombstone wins over it).
        """
        if ttl_seconds <= 0:
            return False
        return await self._guard.attempt(
            lambda: self._fill(cache_key, value, record, ttl_seconds), False
        )

    async def _fill(
        self, cache_key: str, value: SimpleNamespace, record: ApiKeyRecord, ttl_seconds: int
    ) -> bool:
        """Both or neither, atomically: a fill that read the database before a rotation must
        not leave its older record beside the value the rotation wrote (``WATCH`` on the
        value, then ``MULTI``/``EXEC``; any write to the value meanwhile aborts the fill)."""
        sealed = self.seal(cache_key, record, ttl_seconds)
        value_key, encoded = self.value_key(cache_key), encode_value(value)
        client = self._client
        if isinstance(client, RedisCluster):
            return await self._fill_by_script(client, cache_key, encoded, sealed, ttl_seconds)
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch(value_key)
            current = await pipe.get(value_key)
            if current is not None and current != encoded:
                await pipe.unwatch()  # type: ignore[no-untyped-call]
                return False  # a tombstone, or another key's value: not ours to add to
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.set(value_key, encoded, ex=ttl_seconds, nx=True)
            # NX: a record written meanwhile (by a rotation) is newer than ours.
            pipe.set(self.record_key(cache_key), sealed, ex=ttl_seconds, nx=True)
            try:
                stored, _ = await pipe.execute()
            except WatchError:
                return False
        return bool(stored)

    async def _fill_by_script(
        self, client: RedisCluster, cache_key: str, encoded: bytes, sealed: bytes, ttl: int
    ) -> bool:
        """The fill on a cluster: one Lua script over the two keys of one slot.

        redis-py 8.1's asyncio cluster pipeline accepts ``WATCH``, but it routes every command
        issued between ``WATCH`` and ``MULTI`` (our ``GET``) through ``asyncio.run`` on a new
        thread that this event loop blocks on, and that thread's loop re-reads the slot map when
        the client needs it (connections bound to a loop that is gone): not something to put
        on the request path. The script reads the value and writes both keys in one step inside
        Redis, which no other command can interleave with, so it keeps every property of the
        ``WATCH`` version: a tombstone or another value already there stops the fill, the value
        is only added (``NX``), and the record never lands without the value's check.
        """
        stored = await client.eval(
            _FILL_SCRIPT,
            2,
            self.value_key(cache_key),
            self.record_key(cache_key),
            encoded,
            sealed,
            ttl,
        )
        return bool(stored)

    async def replace(self, cache_key: str, record: ApiKeyRecord, ttl_seconds: int) -> None:
        """Overwrite the record after a change that narrowed it (a rotation); raises
        ``CacheUnavailable`` on failure, since an older record beside the value would admit
        more than the database does."""
        if ttl_seconds <= 0:
            await self._guard.require(lambda: self._client.delete(self.record_key(cache_key)))
            return
        sealed = self.seal(cache_key, record, ttl_seconds)
        await self._guard.require(
            lambda: self._client.set(self.record_key(cache_key), sealed, ex=ttl_seconds)
        )

    async def store(self, cache_key: str, record: ApiKeyRecord, ttl_seconds: int) -> None:
        """``SET EX`` the record alone (beside a value another backend wrote, e.g. tiered)."""
        if ttl_seconds <= 0:
            return
        sealed = self.seal(cache_key, record, ttl_seconds)
        await self._guard.attempt(
            lambda: self._client.set(self.record_key(cache_key), sealed, ex=ttl_seconds), None
        )
