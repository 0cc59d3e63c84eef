"""ApiKeyService: authenticate keys through the cache, and manage their lifecycle.

Request path: offline format check (garbage costs no I/O) → negative cache → cache → on a miss
one repository lookup per key per process (single-flight), filled with ``SET NX`` semantics and
a TTL that never outlives the key.

Revocation path: commit the change and its event in one transaction, then replace every cached
copy with a short-lived "revoked" tombstone. Because fills only add when nothing is cached, a
request that read "active" just before the commit cannot write it back after the tombstone (the
cache-aside race). Then wait until the revocation is final everywhere (``revocation_finality``):
every serving process applies the event log and keeps local copies only under a lease
(``revocation_log``), so a revocation reaches every worker of every host even when the cache
cannot carry it. A failed invalidation is never swallowed: it is logged, counted and reported.

Redis is a cache, never an authority: a cached value only ever says "this digest is (not)
active", and is used only when the record it leads to has that very digest. With a
``SignedRecordCache`` (the ``redis`` and ``tiered`` backends) that record comes from Redis itself,
authenticated by an HMAC bound to the digest, so any worker admits a cached key with its scopes
and expiry checked even when the database is down; an unauthenticated record is a miss.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Protocol

from app.domain.digests import sha256
from app.domain.errors import (
    DuplicateKey,
    InvalidApiKey,
    InvalidKeyRequest,
    RepositoryUnavailable,
    RevocationNotFinal,
    UnknownKeyPrefix,
)
from app.domain.keys import (
    KEY_LENGTH,
    MalformedApiKey,
    ParsedApiKey,
    digest,
    generate_api_key,
    validated_prefix,
)
from app.domain.scopes import KNOWN_SCOPES
from app.repositories.base import (
    OPERATOR,
    ApiKeyRecord,
    ApiKeyRepository,
    AuditActor,
    EventLogRepository,
    KeyEvent,
    Revocation,
)
from app.services.audit_pages import DEFAULT_AUDIT_PAGE_SIZE, AuditPage, audit_page
from app.services.bounded_ttl_map import BoundedTtlMap
from app.services.cache_budget import close_budget, open_budget
from app.services.cache_protocol import (
    CoherentCacheBackend,
    InvalidationReport,
    LocalCopies,
    ProcessLocalPeek,
    SharedReader,
    SharedTombstones,
)
from app.services.key_pages import DEFAULT_PAGE_SIZE, KeyPage, list_page
from app.services.key_policy import check_issuance
from app.services.metrics import CacheMetrics
from app.services.negative_cache import NegativeCache
from app.services.record_cache import SignedRecordCache
from app.services.revocation_finality import Finality, FinalityNeeds, await_finality
from app.services.revocation_log import RevocationFollower
from app.services.single_flight import SingleFlight

logger = logging.getLogger(__name__)

MAX_EXPIRES_IN_SECONDS = 10 * 365 * 24 * 3600
MAX_GRACE_SECONDS = 30 * 24 * 3600
_NAME_PATTERN = re.compile(r"^[\w .:@/-]{1,100}$")
_MAX_PENDING_SHARED = 10_000
_FIRST_POLL_WAIT_SECONDS = 1.0

_monotonic = time.monotonic


class _Lease(Protocol):
    """Until when (monotonic) this process's own copies may answer."""

    @property
    def lease_until(self) -> float: ...


@dataclass(frozen=True, slots=True)
class _EndlessLease:
    """The lease of a service without an event log: alone, nobody revokes behind its back."""

    lease_until: float = math.inf


_ENDLESS_LEASE = _EndlessLease()


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
    finality: Finality


@dataclass(frozen=True, slots=True)
class RotationResult:
    new_key: CreatedKey
    old_record: ApiKeyRecord
    invalidation: InvalidationReport
    finality: Finality


@dataclass(frozen=True, slots=True)
class _KnownKey:
    """A key's record as this process last read it, with the answer built once for routes."""

    record: ApiKeyRecord
    identity: AuthenticatedKey
    # Copied out of ``record`` for the hit path, which reads them on every request.
    admissible: bool
    """Not revoked (expiry is checked against the clock on each use)."""
    expires_at: datetime | None


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
            f"unknown scope {unknown[0]!r}: expected one of {', '.join(sorted(KNOWN_SCOPES))}",
            field="scopes",
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
        event_log: EventLogRepository | None = None,
        poll_interval_seconds: float = 1.0,
        lease_seconds: float = 10.0,
        finality_timeout_seconds: float = 15.0,
        records: SignedRecordCache | None = None,
        shared_writes_can_be_lost: bool = False,
    ) -> None:
        """Without ``event_log`` the service is alone (unit tests, tools): nobody else can
        revoke behind its back, so its local copies need no lease.

        ``shared_writes_can_be_lost``: the shared cache is replicated (Sentinel, Cluster), so a
        failover can drop a tombstone the primary acknowledged — replication is asynchronous,
        and a primary that Sentinel replaced keeps taking writes from clients still connected
        to it until it is reconfigured, then discards them. There, revoke does not rely on the
        tombstone: it waits until every live member has applied the event from the log (each
        then refuses the key whatever Redis hands it), or its lease lapsed. An acknowledgement
        over the invalidation channel is not enough there: it says the member dropped its own
        copy, not that it will refuse the stale value it may read next."""
        self._cache = cache
        self._local_view = cache.local_view if isinstance(cache, ProcessLocalPeek) else None
        self._holds_local_copies = self._local_view is not None
        self._evict_local = cache.evict_local if isinstance(cache, LocalCopies) else None
        self._read_shared = cache.read_shared if isinstance(cache, SharedReader) else None
        self._has_shared_tier = isinstance(cache, SharedTombstones)
        self._shared_writes_can_be_lost = shared_writes_can_be_lost
        self._event_log = event_log
        self._lease_seconds = lease_seconds
        self._finality_timeout = finality_timeout_seconds
        # Events whose shared tombstone could not be written yet; retried after every poll.
        self._pending_shared: dict[int, KeyEvent] = {}
        # Keys this process learnt were revoked, for as long as a stale "active" value could
        # still sit in the shared cache: such a value is refused (and its tombstone re-written).
        self._recently_revoked: BoundedTtlMap[str, KeyEvent] = BoundedTtlMap(_MAX_PENDING_SHARED)
        self._follower: RevocationFollower | None = None
        # Whose lease a local hit checks: the follower's, or (alone) one that never ends.
        self._lease: _Lease = _ENDLESS_LEASE
        if event_log is not None:
            self._follower = RevocationFollower(
                event_log,
                apply=self._apply_event,
                after_poll=self._retry_shared_tombstones,
                member_id=str(getattr(cache, "member_id", "") or uuid.uuid4().hex),
                description=f"{socket.gethostname()}:{os.getpid()}",
                poll_interval_seconds=poll_interval_seconds,
                lease_seconds=lease_seconds,
                wall_clock=clock,
                # A stale shared value can outlive a revocation by the cache TTL at most.
                history_seconds=cache_ttl_seconds + lease_seconds if self._has_shared_tier else 0,
            )
            self._lease = self._follower
        # Authenticated records beside a shared cache's values. Without a process-local peek
        # (the redis backend) the value and the record are read together in one round trip.
        self._records = records
        self._read_pair = records.read if records is not None and self._local_view is None else None
        self._repository = repository
        self._cache_ttl = cache_ttl_seconds
        self._negative = NegativeCache(negative_ttl_seconds, negative_max_entries)
        # Scopes and expiry by digest: the cached value holds only (apiKey, active), so each
        # process remembers the rest of a key's record from its last database read, beside the
        # immutable answer handed to routes (built once per key rather than per request). Keyed
        # by the record's own digest, as the cache is: what a digest finds here is that key's
        # record, whatever prefix a (possibly forged) cached value names.
        self._known: BoundedTtlMap[str, _KnownKey] = BoundedTtlMap(
            record_memo_max_entries, expiring=False
        )
        self._known_key = self._known.get
        self._known_item = self._known.peek_item
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

    @property
    def follower(self) -> RevocationFollower | None:
        return self._follower

    async def start(self) -> None:
        """Join the members and apply the event log (also started lazily by a request)."""
        if self._follower is not None:
            await self._follower.wait_first_poll(_FIRST_POLL_WAIT_SECONDS)

    async def aclose(self) -> None:
        """Stop following the log and leave the members registry."""
        if self._follower is not None:
            await self._follower.aclose()

    def _local_trusted(self) -> bool:
        """Whether this process's own copies may answer: under a valid lease (see the module
        docstring of ``revocation_log``), or when there is no log to follow."""
        return self._lease.lease_until > _monotonic()

    async def _cached(self, cache_key: str) -> SimpleNamespace | None:
        """The cache's answer, from its shared tier only when local copies are not trusted."""
        if not self._holds_local_copies or self._local_trusted():
            return await self._cache.get(cache_key)
        if self._read_shared is not None:
            return await self._read_shared(cache_key)
        return None

    def _known_record(self, cache_key: str) -> _KnownKey | None:
        return self._known_key(cache_key) if self._local_trusted() else None

    # -- request path -------------------------------------------------------------------------

    def admit_from_memory(self, plaintext: str) -> AuthenticatedKey | None:
        """The process-local hit, without an await: the caller, or ``None`` for "ask
        ``authenticate``", which decides everything else.

        A text of the key's length is hashed and looked up in this process's memory, where
        only the digests of issued (hence well-formed) keys can be found, so a hit needs no
        format check — sha256 does not collide. Only under a valid lease, only an active entry,
        only with the remembered record of this very digest, not revoked and not expired.
        Routes call it before ``authenticate`` so that a hit costs no coroutine either.
        """
        local_view = self._local_view
        if local_view is None or len(plaintext) != KEY_LENGTH:
            return None
        # One clock read for the lease and for the entry's expiry.
        now = _monotonic()
        if self._lease.lease_until <= now:
            return None
        cache_key = sha256(plaintext.encode()).hexdigest()
        # The entry's item read and judged here rather than through a lookup function of the
        # cache's: two C calls and no Python frame (see ``LocalView``).
        stored = local_view.peek_item(cache_key)
        if stored is None or stored[0] <= now:
            return None
        local_view.touch(cache_key)
        # Of the value, only its word on the key being active: the digest names the key, and
        # the record remembered for that digest says the rest. (A shared tier's value can name
        # any prefix; it is not read here, so it cannot lead to another key's record.)
        if not stored[1].active:
            return None
        # The memo is read without being marked recently used (a ``move_to_end`` less per
        # hit): the cache entry just found was. Its records go in the order the slower path
        # last remembered or read them; one evicted from under a busy key costs that key one
        # slower request, which reads the record again. The item's expiry is ``NEVER``.
        item = self._known_item(cache_key)
        if item is None:
            return None
        known = item[1]
        if not known.admissible or (
            known.expires_at is not None and self._clock() >= known.expires_at
        ):
            return None
        self.metrics.local_hits += 1
        return known.identity

    async def authenticate(self, plaintext: str) -> AuthenticatedKey:
        """Admit an active key or raise ``InvalidApiKey``; ``RepositoryUnavailable`` on outage.

        A process-local hit first (``admit_from_memory``); then the offline format check, which
        every other path passes before anything else: garbage is refused before it reaches a
        cache backend's ``get``, Redis or the database.
        """
        identity = self.admit_from_memory(plaintext)
        if identity is not None:
            return identity
        try:
            prefix = validated_prefix(plaintext)
        except MalformedApiKey:
            raise InvalidApiKey("malformed") from None
        cache_key = digest(plaintext)
        if cache_key in self._negative:
            self.metrics.negative_hits += 1
            raise InvalidApiKey("unknown")
        # Then the cache and the repository, with at most one failed cache call (see
        # cache_budget). Written out here rather than in a coroutine of its own: a shared hit
        # (redis) comes this way on every request.
        budget = open_budget()
        try:
            follower = self._follower
            if follower is not None and follower.lease_until <= _monotonic():
                # Not (or no longer) following the log: start, and give the first poll a moment.
                await follower.wait_first_poll(_FIRST_POLL_WAIT_SECONDS)
            read_pair = self._read_pair
            if read_pair is not None:  # ``_read_cache`` for a pair, a coroutine level less
                pair = await read_pair(cache_key)
                cached, record = self._checked_pair(prefix, cache_key, *pair)
            else:
                cached, record = await self._read_cache(prefix, cache_key, load_by_prefix=True)
            if cached is not None and cached.apiKey == prefix:
                if not cached.active:
                    # A tombstone (or a revocation this process applied) wins over any record.
                    self.metrics.shared_hits += 1
                    raise InvalidApiKey("revoked")
                if record is not None:
                    self.metrics.shared_hits += 1
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
        finally:
            close_budget(budget)

    async def _read_cache(
        self, prefix: str, cache_key: str, *, load_by_prefix: bool
    ) -> tuple[SimpleNamespace | None, ApiKeyRecord | None]:
        """The cached value and the record bound to ``cache_key`` it leads to, if any.

        A value is only ever half an answer: the record must carry this very digest, or the
        value is not used (anyone who can write to Redis can name any public prefix). The record
        comes from, in order: the signed record read with the value (redis), this process's
        memo, the signed record alone (tiered), or, with no signed records at all (memory), a
        repository read by prefix. ``(value, None)`` means: not an answer, ask the database.
        """
        if self._read_pair is not None:
            return self._checked_pair(prefix, cache_key, *(await self._read_pair(cache_key)))
        cached = self._unless_revoked_here(cache_key, await self._cached(cache_key))
        if cached is None or cached.apiKey != prefix or not cached.active:
            return cached, None
        known = self._known_record(cache_key)  # remembered under its own digest
        if known is not None:
            return cached, known.record
        record: ApiKeyRecord | None = None
        if self._records is not None:
            record = await self._records.read_record(cache_key)
            if record is not None and record.prefix == prefix:
                return cached, self._remember(record).record
            return cached, None
        if load_by_prefix:
            record = await self._prefix_lookups.run(prefix, lambda: self._load_by_prefix(prefix))
        return cached, record if record is not None and _bound(record, cache_key) else None

    def _checked_pair(
        self,
        prefix: str,
        cache_key: str,
        cached: SimpleNamespace | None,
        signed: ApiKeyRecord | None,
    ) -> tuple[SimpleNamespace | None, ApiKeyRecord | None]:
        """A value and signed record read together, as ``_read_cache`` answers for them."""
        cached = self._unless_revoked_here(cache_key, cached)
        if cached is None or signed is None or signed.prefix != prefix or not cached.active:
            return cached, None
        return cached, signed

    def _unless_revoked_here(
        self, cache_key: str, cached: SimpleNamespace | None
    ) -> SimpleNamespace | None:
        """``cached``, or a tombstone when it says "active" for a key this process has applied
        the revocation of.

        Such a value is stale: its tombstone was lost, e.g. written to a primary that a failover
        then demoted (it resynchronised from a replica that never received it). The read that
        found it may have copied it into this process's memory (the tiered L1), where the next
        request would take it without asking Redis or checking the revocation: it goes, the
        signed record that came with it is not remembered, and the tombstone is re-written
        after the next poll, for every process, including those started after the revocation.
        """
        if cached is None or not cached.active:
            return cached
        event = self._recently_revoked.get(cache_key)
        if event is None:
            return cached
        self._known.pop(event.digest)
        if self._evict_local is not None:
            self._evict_local(cache_key)
        if self._has_shared_tier and self._follower is not None:
            self._pending_shared.setdefault(event.id, event)
        return SimpleNamespace(apiKey=cached.apiKey, active=False)

    def _admit(self, record: ApiKeyRecord) -> AuthenticatedKey:
        if record.revoked_at is not None:
            raise InvalidApiKey("revoked")
        if record.expires_at is not None and self._clock() >= record.expires_at:
            raise InvalidApiKey("expired")
        known = self._known_key(record.digest)
        # Mostly the very object remembered (the signed-record memo hands it back): ``is``
        # first spares the field-by-field comparison.
        if known is not None and (known.record is record or known.record == record):
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
        cached, known = await self._read_cache(prefix, cache_key, load_by_prefix=False)
        if cached is not None and cached.apiKey == prefix:
            if known is None and not cached.active:
                memo = self._known_record(cache_key)
                known = None if memo is None else memo.record
            if known is not None:
                return _Lookup(record=known, active=cached.active)
        self.metrics.repository_lookups += 1
        negative_generation = self._negative.generation
        record = await self._repository.get_by_digest(cache_key)
        if record is None:
            self._negative.add(cache_key, read_at_generation=negative_generation)
            return _Lookup(record=None, active=False)
        self._remember(record)
        active = record.is_active(self._clock())
        value = SimpleNamespace(apiKey=record.prefix, active=active)
        if await self._fill(cache_key, value, record):
            return _Lookup(record=record, active=active)
        # Something was cached while we read the database: a revocation tombstone wins over
        # what we read, since it may have been written after our read.
        current = await self._cached(cache_key)
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

    async def _fill(self, cache_key: str, value: SimpleNamespace, record: ApiKeyRecord) -> bool:
        """Add the value (``SET NX``) and, with signed records, store the record beside it."""
        ttl = self._fill_ttl(record)
        records = self._records
        if records is None:
            return await self._cache.add(cache_key, value, ttl)
        if self._read_pair is not None:
            return await records.fill(cache_key, value, record, ttl)
        stored = await self._cache.add(cache_key, value, ttl)
        if stored:  # never beside a value someone else wrote (a rotation's, say)
            await records.store(cache_key, record, ttl)
        return stored

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
            admissible=record.revoked_at is None,
            expires_at=record.expires_at,
        )
        self._known.put(record.digest, known)
        return known

    # -- lifecycle ----------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        scopes: Iterable[str],
        expires_in_seconds: int | None = None,
        *,
        issuer: AuthenticatedKey | None = None,
        request_id: str | None = None,
    ) -> CreatedKey:
        """Store a new key's digest and return the plaintext, which is never stored.

        ``issuer`` is the key asking (an HTTP caller): it may only grant what it holds and the
        new key may not outlive it (``check_issuance``). ``None`` is the operator command line,
        which is trusted: it can write to the database anyway. The audit trail records the
        issuer's prefix (or ``cli``) and ``request_id`` with the key, in its transaction.
        """
        if not _NAME_PATTERN.fullmatch(name):
            raise InvalidKeyRequest(
                "name must be 1-100 characters of letters, digits, spaces or ._:@/-", field="name"
            )
        chosen_scopes = validate_scopes(scopes)
        expires_at = None
        if expires_in_seconds is not None:
            if not 0 < expires_in_seconds <= MAX_EXPIRES_IN_SECONDS:
                raise InvalidKeyRequest(
                    f"expires_in must be between 1 and {MAX_EXPIRES_IN_SECONDS} seconds",
                    field="expires_in",
                )
            expires_at = self._clock() + timedelta(seconds=expires_in_seconds)
        if issuer is not None:
            check_issuance(issuer.scopes, issuer.expires_at, chosen_scopes, expires_at)
        actor = OPERATOR if issuer is None else AuditActor(issuer.prefix, request_id)
        return await self._store_new_key(name, chosen_scopes, expires_at, actor)

    async def _store_new_key(
        self, name: str, scopes: tuple[str, ...], expires_at: datetime | None, actor: AuditActor
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
                await self._repository.add(record, actor=actor)
            except DuplicateKey:
                continue
            self._welcome(record)
            logger.info("created API key %s (%s)", record.prefix, ",".join(scopes) or "no scopes")
            return CreatedKey(record=record, plaintext=parsed.plaintext)
        raise RuntimeError("could not allocate a unique key prefix after 5 attempts")

    async def list_keys(
        self,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        active_only: bool = False,
        name_prefix: str | None = None,
    ) -> KeyPage:
        """One page of keys in (created_at, prefix) order, and the cursor of the next one.

        Never the whole table: with many keys one unbounded read outlives the database deadline
        and the listing would answer 503. The cursor is opaque (``app.services.key_pages``).
        """
        return await list_page(
            self._repository,
            limit=limit,
            cursor=cursor,
            active_at=self._clock() if active_only else None,
            name_prefix=name_prefix,
        )

    async def list_audit(
        self,
        *,
        limit: int = DEFAULT_AUDIT_PAGE_SIZE,
        cursor: str | None = None,
        target_prefix: str | None = None,
    ) -> AuditPage:
        """One page of the audit trail, newest first (``app.services.audit_pages``)."""
        return await audit_page(
            self._repository, limit=limit, cursor=cursor, target_prefix=target_prefix
        )

    async def has_active_admin(self) -> bool:
        """Whether any key with the ``admin`` scope is neither revoked nor expired (one query)."""
        return await self._repository.has_active_admin(self._clock())

    async def revoke(self, prefix: str, *, actor: AuditActor | None = None) -> RevocationResult:
        """Commit the revocation with its event and audit row, replace every cached copy with a
        tombstone, and return once it is final everywhere (``RevocationNotFinal`` past the
        bound). ``actor``: who asks, for the audit trail; ``None`` is the command line."""
        committed_at = self._clock()
        revocation = await self._commit_revocation(prefix, committed_at, actor or OPERATOR)
        record = revocation.record
        event = KeyEvent(
            id=revocation.event_id,
            prefix=record.prefix,
            kind="revoked",
            shared_done=False,
            digest=record.digest,
        )
        self._apply_locally(event)
        tombstone = SimpleNamespace(apiKey=record.prefix, active=False)
        report, shared_written = await self._invalidate(
            record, tombstone, self._cache_ttl, action="revoked"
        )
        finality = await self._finality(event, report, shared_written, committed_at)
        await self._audit_finality(revocation.audit_id, finality)
        logger.info(
            "revoked API key %s (cache: %s; %s in %.3fs)",
            prefix,
            _describe(report),
            finality.how,
            finality.seconds,
        )
        if not finality.final and self._event_log is not None:
            raise RevocationNotFinal(
                f"{finality.detail}; every process that applies the event log refuses it, and "
                f"the rest will within {self._lease_seconds:.0f}s of their last contact"
            )
        return RevocationResult(record=record, invalidation=report, finality=finality)

    async def _commit_revocation(self, prefix: str, at: datetime, actor: AuditActor) -> Revocation:
        try:
            revocation = await self._repository.revoke(prefix, at, actor=actor)
        except RepositoryUnavailable:
            # The deadline may have fired after the commit: ask again (revoke is idempotent),
            # so a committed revocation is never answered as if it had not happened.
            revocation = await self._repository.revoke(prefix, at, actor=actor)
        if revocation is None:
            raise UnknownKeyPrefix(prefix)
        return revocation

    async def rotate(
        self,
        prefix: str,
        grace_seconds: int = 0,
        *,
        issuer: AuthenticatedKey | None = None,
        actor: AuditActor | None = None,
    ) -> RotationResult:
        """Issue a successor with the same name and scopes; the old key expires after the grace.

        One transaction with a conditional update: a revoked, expired or already rotated key
        cannot be rotated (``KeyNotActive`` naming the successor), two concurrent rotations
        yield one successor, and the successor keeps the old key's own expiry, never its grace.
        The audit row (``actor``, ``None`` being the command line) is in that transaction.
        """
        if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
            raise InvalidKeyRequest(f"grace must be between 0 and {MAX_GRACE_SECONDS} seconds")
        old = await self._repository.get_by_prefix(prefix)
        if old is None:
            raise UnknownKeyPrefix(prefix)
        if issuer is not None:
            # The successor copies the old key's scopes and expiry: the caller must be able to
            # issue exactly that, or rotating a wider key would mint it a wider key.
            check_issuance(issuer.scopes, issuer.expires_at, old.scopes, old.expires_at)
        committed_at = self._clock()
        grace_until = committed_at + timedelta(seconds=grace_seconds)
        for _attempt in range(5):
            parsed = self._key_generator()
            successor = ApiKeyRecord(
                prefix=parsed.prefix,
                name=old.name,
                scopes=old.scopes,
                created_at=committed_at,
                expires_at=old.expires_at,
                digest=digest(parsed.plaintext),
            )
            try:
                rotation = await self._repository.rotate(
                    prefix, successor, grace_until, committed_at, actor=actor or OPERATOR
                )
            except DuplicateKey:
                continue
            break
        else:
            raise RuntimeError("could not allocate a unique key prefix after 5 attempts")
        new_key = CreatedKey(record=rotation.new, plaintext=parsed.plaintext)
        self._welcome(rotation.new)
        updated = rotation.old
        event = KeyEvent(
            id=rotation.event_id,
            prefix=prefix,
            kind="rotated",
            shared_done=False,
            digest=updated.digest,
        )
        self._apply_locally(event)
        still_active = updated.is_active(self._clock())
        replacement = SimpleNamespace(apiKey=prefix, active=still_active)
        ttl = self._fill_ttl(updated) if still_active else self._cache_ttl
        report, shared_written = await self._invalidate(updated, replacement, ttl, action="rotated")
        # The successor exists and its plaintext is in hand: never lose it to a slow
        # finality; the answer says how far the narrowing of the old key reached.
        finality = await self._finality(event, report, shared_written, committed_at)
        await self._audit_finality(rotation.audit_id, finality)
        logger.info(
            "rotated API key %s to %s (grace %ss, cache: %s; %s)",
            prefix,
            new_key.record.prefix,
            grace_seconds,
            _describe(report),
            finality.how,
        )
        return RotationResult(
            new_key=new_key, old_record=updated, invalidation=report, finality=finality
        )

    async def _audit_finality(self, audit_id: int, finality: Finality) -> None:
        """Complete the change's audit row with how it became final (or did not, in time).

        A statement of its own, after the wait: the change and its row committed together
        already. Failing to write it must not turn a committed change into an error.
        """
        if audit_id <= 0:
            return
        how = finality.how if finality.final else f"not final: {finality.how}"
        try:
            await self._repository.record_finality(audit_id, how)
        except RepositoryUnavailable:
            logger.warning("could not record the finality of audit entry %s", audit_id)

    def _welcome(self, record: ApiKeyRecord) -> None:
        """A new key: a probe in flight with a stale "unknown" must not be joined or recorded."""
        self._digest_lookups.forget(record.digest)
        self._negative.discard(record.digest)
        self._remember(record)

    # -- the event log --------------------------------------------------------------------------

    def _apply_locally(self, event: KeyEvent) -> None:
        """Drop every copy this process holds of the key in ``event``."""
        self._known.pop(event.digest)
        self._digest_lookups.forget(event.digest)
        self._negative.discard(event.digest)
        if event.kind == "revoked":
            self._recently_revoked.put(event.digest, event, self._cache_ttl + self._lease_seconds)
        if self._evict_local is not None:
            self._evict_local(event.digest)

    async def _apply_event(self, event: KeyEvent) -> None:
        """One event of the log: local copies go; the shared tombstone is re-written when
        nobody has marked it done yet (the revoker may have been cut off from Redis)."""
        self._apply_locally(event)
        if self._has_shared_tier and not event.shared_done:
            await self._write_shared_tombstone(event)

    async def _write_shared_tombstone(self, event: KeyEvent) -> None:
        assert isinstance(self._cache, SharedTombstones)
        try:
            if event.kind == "revoked":
                tombstone = SimpleNamespace(apiKey=event.prefix, active=False)
                await self._cache.write_tombstone(event.digest, tombstone, self._cache_ttl)
                if self._records is not None:
                    record = await self._repository.get_by_prefix(event.prefix)
                    if record is not None:
                        await self._records.replace(event.digest, record, self._cache_ttl)
            else:
                await self._refill_from_database(event)
        except Exception as exc:
            if event.id not in self._pending_shared:
                logger.warning(
                    "could not write the shared tombstone of %s (%s): retrying after each poll",
                    event.prefix,
                    type(exc).__name__,
                )
            self._pending_shared[event.id] = event
            while len(self._pending_shared) > _MAX_PENDING_SHARED:
                del self._pending_shared[next(iter(self._pending_shared))]
            return
        self._pending_shared.pop(event.id, None)
        await self._mark_shared_done(event.id)

    async def _refill_from_database(self, event: KeyEvent) -> None:
        """After a rotation: the shared value and record as the database now says."""
        assert isinstance(self._cache, SharedTombstones)
        record = await self._repository.get_by_prefix(event.prefix)
        if record is None:
            return
        active = record.is_active(self._clock())
        ttl = self._fill_ttl(record) if active else self._cache_ttl
        value = SimpleNamespace(apiKey=record.prefix, active=active) if ttl > 0 else None
        await self._cache.write_tombstone(event.digest, value, ttl)
        if self._records is not None and active:
            await self._records.replace(event.digest, record, ttl)

    async def _mark_shared_done(self, event_id: int) -> None:
        if self._event_log is None or event_id <= 0:
            return
        try:
            await self._event_log.mark_shared_done(event_id, self._clock())
        except RepositoryUnavailable:
            logger.warning("could not record that the shared cache reflects an event")

    async def _retry_shared_tombstones(self) -> None:
        for event in list(self._pending_shared.values()):
            await self._write_shared_tombstone(event)

    async def _finality(
        self,
        event: KeyEvent,
        report: InvalidationReport,
        shared_written: bool,
        committed_at: datetime,
    ) -> Finality:
        if shared_written:
            await self._mark_shared_done(event.id)
        if self._event_log is None:
            return Finality(
                final=report.confirmed,
                how="this process only (no event log)",
                shared_done=shared_written or not self._has_shared_tier,
            )
        lossy = self._has_shared_tier and self._shared_writes_can_be_lost
        return await await_finality(
            self._event_log,
            event.id,
            needs=FinalityNeeds(
                shared=self._has_shared_tier, local=self._holds_local_copies or lossy
            ),
            shared_done_by_us=shared_written,
            acknowledged_by=frozenset() if lossy else report.acknowledged_by,
            own_member_id=None if self._follower is None else self._follower.member_id,
            committed_at=committed_at,
            lease_seconds=self._lease_seconds,
            timeout_seconds=self._finality_timeout,
            wall_clock=self._clock,
        )

    async def _invalidate(
        self,
        record: ApiKeyRecord,
        replacement: SimpleNamespace,
        ttl_seconds: int,
        *,
        action: str,
    ) -> tuple[InvalidationReport, bool]:
        """The cache's report, and whether the shared tier (if any) now holds the change."""
        try:
            report = await self._cache.invalidate(
                record.digest, replacement if ttl_seconds > 0 else None, ttl_seconds
            )
            if self._records is not None:
                # The signed record narrows with the value (a rotation's new expiry, or the
                # revocation itself): a value rewritten by someone else still meets it.
                await self._records.replace(record.digest, record, ttl_seconds)
        except Exception as exc:
            self.metrics.invalidation_failures += 1
            logger.error(
                "key %s was %s in the database but the cache invalidation failed (%s): "
                "the event log carries it to every process",
                record.prefix,
                action,
                type(exc).__name__,
            )
            return (
                InvalidationReport(
                    confirmed=False,
                    scope="shared",
                    detail=(
                        f"the key is {action} in the database, but the cache could not be "
                        "reached: the event log carries it"
                    ),
                ),
                False,
            )
        return report, self._has_shared_tier

    async def clear_cache(self) -> None:
        """Drop every cached entry (this process's memo and negative cache too)."""
        self._negative.clear()
        self._known.clear()
        await self._cache.clear()

    async def check_repository(self) -> None:
        await self._repository.ping()


def _bound(record: ApiKeyRecord, cache_key: str) -> bool:
    """Whether ``record`` is the record of the key whose digest is ``cache_key``."""
    return hmac.compare_digest(record.digest, cache_key)


def _describe(report: InvalidationReport) -> str:
    if not report.confirmed:
        return "NOT confirmed"
    if report.expected is not None:
        return f"confirmed by {report.acknowledged}/{report.expected} workers"
    return f"confirmed ({report.scope})"
