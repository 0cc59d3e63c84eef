"""ApiKeyService: authenticate keys through the cache, and manage their lifecycle.

Request path: offline format check (garbage costs no I/O) → negative cache → cache → on a miss
one repository lookup per key per process (single-flight), filled with ``SET NX`` semantics and
a TTL that never outlives the key.

Revocation path: commit in the repository first, then replace every cached copy with a short-lived
"revoked" tombstone. Because fills only add when nothing is cached, a request that read "active"
just before the commit cannot write it back after the tombstone (the cache-aside race). A failed
invalidation is never swallowed: it is logged, counted and reported to the caller.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from app.domain.errors import (
    DuplicateKey,
    InvalidApiKey,
    InvalidKeyRequest,
    KeyNotActive,
    UnknownKeyPrefix,
)
from app.domain.keys import (
    MalformedApiKey,
    ParsedApiKey,
    digest,
    generate_api_key,
    validated_prefix,
)
from app.domain.scopes import KNOWN_SCOPES
from app.repositories.base import ApiKeyRecord, ApiKeyRepository
from app.services.bounded_ttl_map import BoundedTtlMap
from app.services.cache_budget import close_budget, open_budget
from app.services.cache_protocol import (
    CoherentCacheBackend,
    InvalidationReport,
    ProcessLocalPeek,
)
from app.services.metrics import CacheMetrics
from app.services.negative_cache import NegativeCache
from app.services.single_flight import SingleFlight

logger = logging.getLogger(__name__)

MAX_EXPIRES_IN_SECONDS = 10 * 365 * 24 * 3600
MAX_GRACE_SECONDS = 30 * 24 * 3600
_NAME_PATTERN = re.compile(r"^[\w .:@/-]{1,100}$")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AuthenticatedKey:
    """What a route learns about the caller: never the key itself."""

    prefix: str
    scopes: frozenset[str]
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key. ``plaintext`` is shown once and exists nowhere else."""

    record: ApiKeyRecord
    plaintext: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RevocationResult:
    record: ApiKeyRecord
    invalidation: InvalidationReport


@dataclass(frozen=True, slots=True)
class RotationResult:
    new_key: CreatedKey
    old_record: ApiKeyRecord
    invalidation: InvalidationReport


@dataclass(frozen=True, slots=True)
class _KnownKey:
    """A key's record as this process last read it, with the answer built once for routes."""

    record: ApiKeyRecord
    identity: AuthenticatedKey


@dataclass(frozen=True, slots=True)
class _Lookup:
    """A repository answer for one digest, after the cache had its say on the fill."""

    record: ApiKeyRecord | None
    active: bool


def validate_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(sorted(set(scopes)))
    unknown = [scope for scope in chosen if scope not in KNOWN_SCOPES]
    if unknown:
        raise InvalidKeyRequest(
            f"unknown scope {unknown[0]!r}: expected one of {', '.join(sorted(KNOWN_SCOPES))}"
        )
    return chosen


class ApiKeyService:
    """The one place that knows how keys, the cache and the repository fit together."""

    def __init__(
        self,
        cache: CoherentCacheBackend,
        repository: ApiKeyRepository,
        *,
        cache_ttl_seconds: int = 60,
        negative_ttl_seconds: int = 5,
        negative_max_entries: int = 10_000,
        record_memo_max_entries: int = 100_000,
        metrics: CacheMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
        key_generator: Callable[[], ParsedApiKey] = generate_api_key,
    ) -> None:
        self._cache = cache
        self._peek = cache.peek if isinstance(cache, ProcessLocalPeek) else None
        self._repository = repository
        self._cache_ttl = cache_ttl_seconds
        self._negative = NegativeCache(negative_ttl_seconds, negative_max_entries)
        # Scopes and expiry by prefix: the cached value holds only (apiKey, active), so each
        # process remembers the rest of a key's record from its last database read, beside the
        # immutable answer handed to routes (built once per key rather than per request).
        self._known: BoundedTtlMap[str, _KnownKey] = BoundedTtlMap(record_memo_max_entries)
        self._known_key = self._known.get
        self._digest_lookups: SingleFlight[str, _Lookup] = SingleFlight()
        self._prefix_lookups: SingleFlight[str, ApiKeyRecord | None] = SingleFlight()
        self.metrics = metrics if metrics is not None else CacheMetrics()
        self._clock = clock
        self._key_generator = key_generator

    @property
    def cache(self) -> CoherentCacheBackend:
        return self._cache

    @property
    def cache_ttl_seconds(self) -> int:
        return self._cache_ttl

    # -- request path -------------------------------------------------------------------------

    async def authenticate(self, plaintext: str) -> AuthenticatedKey:
        """Admit an active key or raise ``InvalidApiKey``; ``RepositoryUnavailable`` on outage."""
        try:
            prefix = validated_prefix(plaintext)
        except MalformedApiKey:
            raise InvalidApiKey("malformed") from None
        cache_key = digest(plaintext)
        if self._peek is not None:
            identity = self._admit_from_process_memory(prefix, cache_key)
            if identity is not None:
                metrics = self.metrics
                metrics.cache_hits += 1
                metrics.local_hits += 1
                return identity
        if cache_key in self._negative:
            self.metrics.negative_hits += 1
            raise InvalidApiKey("unknown")
        budget = open_budget()
        try:
            return await self._authenticate_well_formed(prefix, cache_key)
        finally:
            close_budget(budget)

    async def _authenticate_well_formed(self, prefix: str, cache_key: str) -> AuthenticatedKey:
        """The cache, then the repository; at most one failed cache call (see cache_budget)."""
        cached = await self._cache.get(cache_key)
        if cached is not None and cached.apiKey == prefix:
            self.metrics.cache_hits += 1
            if not cached.active:
                raise InvalidApiKey("revoked")
            known = self._known_key(prefix)
            record = (
                known.record
                if known is not None
                else await self._prefix_lookups.run(prefix, lambda: self._load_by_prefix(prefix))
            )
            if record is None:
                raise InvalidApiKey("unknown")
            return self._admit(record)
        self.metrics.cache_misses += 1
        lookup = await self._digest_lookups.run(
            cache_key, lambda: self._load_by_digest(cache_key, prefix)
        )
        if lookup.record is None:
            raise InvalidApiKey("unknown")
        if not lookup.active:
            raise InvalidApiKey("revoked")
        return self._admit(lookup.record)

    def _admit_from_process_memory(self, prefix: str, cache_key: str) -> AuthenticatedKey | None:
        """The hit path of process-local caches: no await, no allocation, no budget.

        Only an active entry of a key whose record this process has seen and still admits is
        answered here; anything else returns ``None`` and takes the full path, which decides.
        """
        assert self._peek is not None
        cached = self._peek(cache_key)
        if cached is None or not cached.active or cached.apiKey != prefix:
            return None
        known = self._known_key(prefix)
        if known is None:
            return None
        record = known.record
        if record.revoked_at is not None:
            return None
        if record.expires_at is not None and self._clock() >= record.expires_at:
            return None
        return known.identity

    def _admit(self, record: ApiKeyRecord) -> AuthenticatedKey:
        if record.revoked_at is not None:
            raise InvalidApiKey("revoked")
        if record.expires_at is not None and self._clock() >= record.expires_at:
            raise InvalidApiKey("expired")
        known = self._known_key(record.prefix)
        if known is not None and known.record == record:
            return known.identity
        return self._remember(record).identity

    async def _load_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        self.metrics.repository_lookups += 1
        record = await self._repository.get_by_prefix(prefix)
        if record is not None:
            self._remember(record)
        return record

    async def _load_by_digest(self, cache_key: str, prefix: str) -> _Lookup:
        # Look again before the database, as mlcache does after taking its lock: a request whose
        # cache read missed just before another request's fill reaches here after that flight
        # has landed, and would otherwise make a second lookup for a key now cached.
        cached = await self._cache.get(cache_key)
        if cached is not None and cached.apiKey == prefix:
            known = self._known_key(prefix)
            if known is not None:
                return _Lookup(record=known.record, active=cached.active)
        self.metrics.repository_lookups += 1
        negative_generation = self._negative.generation
        record = await self._repository.get_by_digest(cache_key)
        if record is None:
            self._negative.add(cache_key, read_at_generation=negative_generation)
            return _Lookup(record=None, active=False)
        self._remember(record)
        active = record.is_active(self._clock())
        value = SimpleNamespace(apiKey=record.prefix, active=active)
        if await self._cache.add(cache_key, value, self._fill_ttl(record)):
            return _Lookup(record=record, active=active)
        # Something was cached while we read the database: a revocation tombstone wins over
        # what we read, since it may have been written after our read.
        current = await self._cache.get(cache_key)
        if current is None:
            return _Lookup(record=record, active=active)
        if current.apiKey != record.prefix:
            # sha256 does not collide: a value naming another key is foreign data that would
            # block every fill (they only add when absent) until it expires. Replace it.
            await self._cache.set(cache_key, value, self._fill_ttl(record))
            return _Lookup(record=record, active=active)
        if not current.active:
            return _Lookup(record=record, active=False)
        return _Lookup(record=record, active=active)

    def _fill_ttl(self, record: ApiKeyRecord) -> int:
        """``min(configured TTL, whole seconds until the key expires)``; 0 means do not cache."""
        if record.expires_at is None or not record.is_active(self._clock()):
            return self._cache_ttl
        seconds_left = int((record.expires_at - self._clock()).total_seconds())
        return max(0, min(self._cache_ttl, seconds_left))

    def _remember(self, record: ApiKeyRecord) -> _KnownKey:
        known = _KnownKey(
            record=record,
            identity=AuthenticatedKey(
                prefix=record.prefix, scopes=frozenset(record.scopes), expires_at=record.expires_at
            ),
        )
        self._known.put(record.prefix, known)
        return known

    # -- lifecycle ----------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        scopes: Iterable[str],
        expires_in_seconds: int | None = None,
    ) -> CreatedKey:
        """Store a new key's digest and return the plaintext, which is never stored."""
        if not _NAME_PATTERN.fullmatch(name):
            raise InvalidKeyRequest(
                "name must be 1-100 characters of letters, digits, spaces or ._:@/-"
            )
        chosen_scopes = validate_scopes(scopes)
        expires_at = None
        if expires_in_seconds is not None:
            if not 0 < expires_in_seconds <= MAX_EXPIRES_IN_SECONDS:
                raise InvalidKeyRequest(
                    f"expires_in must be between 1 and {MAX_EXPIRES_IN_SECONDS} seconds"
                )
            expires_at = self._clock() + timedelta(seconds=expires_in_seconds)
        return await self._store_new_key(name, chosen_scopes, expires_at)

    async def _store_new_key(
        self, name: str, scopes: tuple[str, ...], expires_at: datetime | None
    ) -> CreatedKey:
        for _attempt in range(5):
            parsed = self._key_generator()
            record = ApiKeyRecord(
                prefix=parsed.prefix,
                name=name,
                scopes=scopes,
                created_at=self._clock(),
                expires_at=expires_at,
                digest=digest(parsed.plaintext),
            )
            try:
                await self._repository.add(record)
            except DuplicateKey:
                continue
            # A probe of this key may be in flight with a stale "unknown": later requests must
            # not join it, and it must not record its answer in the negative cache.
            self._digest_lookups.forget(record.digest)
            self._negative.discard(record.digest)
            self._remember(record)
            logger.info("created API key %s (%s)", record.prefix, ",".join(scopes) or "no scopes")
            return CreatedKey(record=record, plaintext=parsed.plaintext)
        raise RuntimeError("could not allocate a unique key prefix after 5 attempts")

    async def list_keys(self) -> list[ApiKeyRecord]:
        return await self._repository.list_keys()

    async def revoke(self, prefix: str) -> RevocationResult:
        """Commit the revocation, then replace every cached copy with a revoked tombstone."""
        record = await self._repository.revoke(prefix, self._clock())
        if record is None:
            raise UnknownKeyPrefix(prefix)
        self._remember(record)
        tombstone = SimpleNamespace(apiKey=record.prefix, active=False)
        report = await self._invalidate(record, tombstone, self._cache_ttl, action="revoked")
        logger.info("revoked API key %s (cache: %s)", prefix, _describe(report))
        return RevocationResult(record=record, invalidation=report)

    async def rotate(self, prefix: str, grace_seconds: int = 0) -> RotationResult:
        """Issue a new key with the same name and scopes; the old one expires after the grace."""
        if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
            raise InvalidKeyRequest(f"grace must be between 0 and {MAX_GRACE_SECONDS} seconds")
        old = await self._repository.get_by_prefix(prefix)
        if old is None:
            raise UnknownKeyPrefix(prefix)
        if not old.is_active(self._clock()):
            raise KeyNotActive(prefix)
        new_key = await self._store_new_key(old.name, old.scopes, old.expires_at)
        updated = await self._repository.set_expiry(
            prefix, self._clock() + timedelta(seconds=grace_seconds)
        )
        if updated is None:
            raise UnknownKeyPrefix(prefix)
        self._remember(updated)
        still_active = updated.is_active(self._clock())
        replacement = SimpleNamespace(apiKey=prefix, active=still_active)
        ttl = self._fill_ttl(updated) if still_active else self._cache_ttl
        report = await self._invalidate(updated, replacement, ttl, action="rotated")
        logger.info(
            "rotated API key %s to %s (grace %ss, cache: %s)",
            prefix,
            new_key.record.prefix,
            grace_seconds,
            _describe(report),
        )
        return RotationResult(new_key=new_key, old_record=updated, invalidation=report)

    async def _invalidate(
        self,
        record: ApiKeyRecord,
        replacement: SimpleNamespace,
        ttl_seconds: int,
        *,
        action: str,
    ) -> InvalidationReport:
        self._digest_lookups.forget(record.digest)
        self._negative.discard(record.digest)
        try:
            return await self._cache.invalidate(
                record.digest, replacement if ttl_seconds > 0 else None, ttl_seconds
            )
        except Exception as exc:
            self.metrics.invalidation_failures += 1
            logger.error(
                "key %s was %s in the database but the cache invalidation failed (%s): "
                "cached copies may be honoured for up to %ss",
                record.prefix,
                action,
                type(exc).__name__,
                self._cache_ttl,
            )
            return InvalidationReport(
                confirmed=False,
                scope="shared",
                detail=(
                    f"the key is {action} in the database, but the cache could not be reached: "
                    f"cached copies may be honoured for up to {self._cache_ttl}s"
                ),
            )

    async def clear_cache(self) -> None:
        """Drop every cached entry (this process's memo and negative cache too)."""
        self._negative.clear()
        self._known.clear()
        await self._cache.clear()

    async def check_repository(self) -> None:
        await self._repository.ping()


def _describe(report: InvalidationReport) -> str:
    if not report.confirmed:
        return "NOT confirmed"
    if report.expected is not None:
        return f"confirmed by {report.acknowledged}/{report.expected} workers"
    return f"confirmed ({report.scope})"
