"""ApiKeyService on the real in-memory repository and cache: the request and revocation paths."""

from __future__ import annotations

import asyncio
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from app.domain.errors import InvalidApiKey, InvalidKeyRequest, KeyNotActive, UnknownKeyPrefix
from app.domain.keys import digest
from app.repositories.base import ApiKeyRecord, Revocation
from app.repositories.memory import InMemoryApiKeyRepository
from app.services import apikey_service as apikey_service_module
from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend
from app.services.apikey_service import ApiKeyService
from app.services.cache_protocol import InvalidationReport


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache() -> InMemoryApiKeyCacheBackend:
    return InMemoryApiKeyCacheBackend()


@pytest.fixture
def repository() -> InMemoryApiKeyRepository:
    return InMemoryApiKeyRepository()


@pytest.fixture
def service(
    cache: InMemoryApiKeyCacheBackend, repository: InMemoryApiKeyRepository, clock: Clock
) -> ApiKeyService:
    return ApiKeyService(cache, repository, cache_ttl_seconds=60, clock=clock)


async def test_create_stores_only_the_digest(
    service: ApiKeyService, repository: InMemoryApiKeyRepository
) -> None:
    created = await service.create("match-server", ["read", "write"])

    stored = await repository.get_by_prefix(created.record.prefix)
    assert stored is not None
    assert stored.digest == digest(created.plaintext)
    assert all(getattr(stored, f.name) != created.plaintext for f in fields(ApiKeyRecord))
    assert stored.scopes == ("read", "write")


async def test_miss_reads_the_repository_and_fills_the_cache(
    service: ApiKeyService, cache: InMemoryApiKeyCacheBackend
) -> None:
    created = await service.create("match-server", ["read"])

    caller = await service.authenticate(created.plaintext)

    assert caller.prefix == created.record.prefix and caller.scopes == {"read"}
    cached = await cache.get(digest(created.plaintext))
    assert cached is not None
    assert vars(cached) == {"apiKey": created.record.prefix, "active": True}
    assert service.metrics.repository_lookups == 1


async def test_hit_does_not_read_the_repository(service: ApiKeyService) -> None:
    created = await service.create("match-server", ["read"])
    await service.authenticate(created.plaintext)
    await service.authenticate(created.plaintext)
    await service.authenticate(created.plaintext)
    assert service.metrics.repository_lookups == 1
    assert service.metrics.cache_hits == 2


async def test_hit_filled_by_another_process_loads_scopes_once(
    cache: InMemoryApiKeyCacheBackend, repository: InMemoryApiKeyRepository, clock: Clock
) -> None:
    creator = ApiKeyService(cache, repository, clock=clock)
    created = await creator.create("match-server", ["write"])
    await creator.authenticate(created.plaintext)
    other_worker = ApiKeyService(cache, repository, clock=clock)

    first = await other_worker.authenticate(created.plaintext)
    await other_worker.authenticate(created.plaintext)

    assert first.scopes == {"write"}
    assert other_worker.metrics.repository_lookups == 1


async def test_unknown_key_is_refused(service: ApiKeyService) -> None:
    from app.domain.keys import generate_api_key

    with pytest.raises(InvalidApiKey) as raised:
        await service.authenticate(generate_api_key().plaintext)
    assert raised.value.reason == "unknown"


async def test_malformed_key_is_refused_without_any_lookup(service: ApiKeyService) -> None:
    with pytest.raises(InvalidApiKey) as raised:
        await service.authenticate("game_not-a-key")
    assert raised.value.reason == "malformed"
    assert service.metrics.repository_lookups == 0
    assert service.metrics.cache_misses == 0


async def test_a_process_local_hit_needs_no_format_check(
    service: ApiKeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an issued key's digest can be found in process memory, so a hit skips the check."""
    created = await service.create("match-server", ["read"])
    await service.authenticate(created.plaintext)  # the miss that fills the cache
    checked: list[str] = []
    original = apikey_service_module.validated_prefix

    def counting_check(text: str) -> str:
        checked.append(text)
        return original(text)

    monkeypatch.setattr(apikey_service_module, "validated_prefix", counting_check)

    caller = await service.authenticate(created.plaintext)

    assert caller.prefix == created.record.prefix
    assert checked == []
    assert service.metrics.local_hits == 1


async def test_a_hit_answers_as_the_record_of_its_own_digest_whatever_prefix_the_value_names(
    service: ApiKeyService, cache: InMemoryApiKeyCacheBackend
) -> None:
    """The remembered records are keyed by digest, as the cache is: a cached value that names
    another key's prefix (anyone who can write to a shared tier can write one) neither leads a
    hit to that key's record nor changes who the caller is."""
    mine = await service.create("mine", ["read"])
    other = await service.create("other", ["admin", "read", "write"])
    for created in (mine, other):
        await service.authenticate(created.plaintext)  # cached, and its record remembered
    forged = SimpleNamespace(apiKey=other.record.prefix, active=True)
    await cache.set(digest(mine.plaintext), forged, 60)

    caller = service.admit_from_memory(mine.plaintext)

    assert caller is not None
    assert caller.prefix == mine.record.prefix
    assert caller.scopes == frozenset({"read"})


async def test_a_record_the_memo_let_go_is_read_again_once_and_its_key_still_admitted(
    cache: InMemoryApiKeyCacheBackend, repository: InMemoryApiKeyRepository, clock: Clock
) -> None:
    """A cached key whose record left the bounded memo is not a process-local hit: it takes
    the slower path once, which reads the record again, and is a local hit after that."""
    service = ApiKeyService(
        cache, repository, cache_ttl_seconds=60, clock=clock, record_memo_max_entries=2
    )
    first = (await service.create("first", ["read"])).plaintext
    await service.authenticate(first)  # cached, and its record remembered
    await service.create("second", ["read"])
    await service.create("third", ["read"])  # room for two records: the first's goes
    assert service.admit_from_memory(first) is None
    lookups_before = service.metrics.repository_lookups

    caller = await service.authenticate(first)

    assert first.startswith(caller.prefix)
    assert service.metrics.repository_lookups == lookups_before + 1
    hits_before = service.metrics.local_hits
    assert service.admit_from_memory(first) == caller
    assert service.metrics.local_hits == hits_before + 1
    assert service.metrics.repository_lookups == lookups_before + 1


async def test_a_cached_entry_past_its_ttl_is_no_process_local_hit(
    service: ApiKeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hit path judges the entry's expiry itself, at its own clock reading: an entry cached
    for 60 s admits at 59 s and not at 60 s, when the key takes the slower path again."""
    created = await service.create("match-server", ["read"])
    filled_at = apikey_service_module._monotonic()
    await service.authenticate(created.plaintext)  # the miss that caches it for 60 s

    monkeypatch.setattr(apikey_service_module, "_monotonic", lambda: filled_at + 59)
    assert service.admit_from_memory(created.plaintext) is not None
    monkeypatch.setattr(apikey_service_module, "_monotonic", lambda: filled_at + 61)
    assert service.admit_from_memory(created.plaintext) is None


async def test_a_forged_key_of_the_right_length_reaches_no_cache_read_and_no_database(
    service: ApiKeyService, cache: InMemoryApiKeyCacheBackend
) -> None:
    created = await service.create("match-server", ["read"])
    await service.authenticate(created.plaintext)
    last = created.plaintext[-1]
    forged = created.plaintext[:-1] + ("A" if last != "A" else "B")
    reads: list[str] = []
    original_get = cache.get

    async def recording_get(cache_key: str) -> SimpleNamespace | None:
        reads.append(cache_key)
        return await original_get(cache_key)

    cache.get = recording_get  # type: ignore[method-assign]
    lookups_before = service.metrics.repository_lookups

    with pytest.raises(InvalidApiKey) as raised:
        await service.authenticate(forged)

    assert raised.value.reason == "malformed"
    assert reads == []
    assert service.metrics.repository_lookups == lookups_before


async def test_revoke_commits_then_invalidates(
    service: ApiKeyService, cache: InMemoryApiKeyCacheBackend, repository: InMemoryApiKeyRepository
) -> None:
    created = await service.create("match-server", ["read"])
    await service.authenticate(created.plaintext)
    events: list[str] = []
    original_revoke = repository.revoke
    original_invalidate = cache.invalidate

    async def recording_revoke(prefix: str, at: datetime, **audit: Any) -> Revocation | None:
        events.append("repository.revoke")
        return await original_revoke(prefix, at, **audit)

    async def recording_invalidate(
        key: str, replacement: SimpleNamespace | None, ttl: int
    ) -> InvalidationReport:
        stored = await repository.get_by_prefix(created.record.prefix)
        events.append(f"cache.invalidate(revoked_in_db={stored is not None and stored.revoked_at})")
        return await original_invalidate(key, replacement, ttl)

    repository.revoke = recording_revoke  # type: ignore[method-assign]
    cache.invalidate = recording_invalidate  # type: ignore[method-assign]

    result = await service.revoke(created.record.prefix)

    assert events[0] == "repository.revoke"
    assert events[1].startswith("cache.invalidate(revoked_in_db=2026")
    assert result.invalidation.confirmed
    with pytest.raises(InvalidApiKey):
        await service.authenticate(created.plaintext)
    cached = await cache.get(digest(created.plaintext))
    assert cached is not None and cached.active is False


async def test_revoking_an_unknown_prefix_raises(service: ApiKeyService) -> None:
    with pytest.raises(UnknownKeyPrefix):
        await service.revoke("game_Nope0000")


async def test_expired_key_is_refused_and_fill_ttl_never_outlives_it(
    service: ApiKeyService, cache: InMemoryApiKeyCacheBackend, clock: Clock
) -> None:
    created = await service.create("short", ["read"], expires_in_seconds=20)
    await service.authenticate(created.plaintext)

    remaining = cache.remaining_ttl(digest(created.plaintext))
    assert remaining is not None and remaining <= 20

    clock.now += timedelta(seconds=21)
    with pytest.raises(InvalidApiKey) as raised:
        await service.authenticate(created.plaintext)
    assert raised.value.reason == "expired"


async def test_rotate_keeps_the_old_key_during_the_grace_only(
    service: ApiKeyService, clock: Clock
) -> None:
    old = await service.create("match-server", ["read"])
    await service.authenticate(old.plaintext)

    rotated = await service.rotate(old.record.prefix, grace_seconds=30)

    assert (await service.authenticate(rotated.new_key.plaintext)).scopes == {"read"}
    assert (await service.authenticate(old.plaintext)).prefix == old.record.prefix
    clock.now += timedelta(seconds=31)
    with pytest.raises(InvalidApiKey):
        await service.authenticate(old.plaintext)
    assert (await service.authenticate(rotated.new_key.plaintext)).prefix != old.record.prefix


async def test_rotating_a_revoked_key_is_refused(service: ApiKeyService) -> None:
    created = await service.create("match-server", ["read"])
    await service.revoke(created.record.prefix)
    with pytest.raises(KeyNotActive):
        await service.rotate(created.record.prefix)


@pytest.mark.parametrize(
    ("name", "scopes", "expires_in", "message"),
    [
        ("", ["read"], None, "name"),
        ("ok", ["root"], None, "unknown scope 'root'"),
        ("ok", ["read"], 0, "expires_in"),
        ("ok", ["read"], -5, "expires_in"),
    ],
)
async def test_bad_create_requests_say_what_is_wrong(
    service: ApiKeyService, name: str, scopes: list[str], expires_in: int | None, message: str
) -> None:
    with pytest.raises(InvalidKeyRequest, match=message):
        await service.create(name, scopes, expires_in)


async def test_a_cached_value_naming_another_key_is_replaced_on_the_next_miss(
    cache: InMemoryApiKeyCacheBackend, repository: InMemoryApiKeyRepository, clock: Clock
) -> None:
    """A process that has not remembered the key's record (here: not the one that created it)
    takes the slower path, which does not use a value naming another prefix, and replaces it."""
    issuer = ApiKeyService(cache, repository, cache_ttl_seconds=60, clock=clock)
    created = await issuer.create("match-server", ["read"])
    service = ApiKeyService(cache, repository, cache_ttl_seconds=60, clock=clock)
    foreign = SimpleNamespace(apiKey="game_Other000", active=True)
    await cache.set(digest(created.plaintext), foreign, 60)

    caller = await service.authenticate(created.plaintext)

    assert caller.prefix == created.record.prefix
    cached = await cache.get(digest(created.plaintext))
    assert cached is not None and cached.apiKey == created.record.prefix
    await service.authenticate(created.plaintext)
    assert service.metrics.repository_lookups == 1, "the second request must be a cache hit"


class StragglingReads:
    """A shared-style cache (no ``peek``) whose next read can be held after it looked, so that
    it returns a miss that has become stale meanwhile."""

    def __init__(self) -> None:
        self._store = InMemoryApiKeyCacheBackend()
        self.hold: asyncio.Event | None = None
        self.looked = asyncio.Event()

    async def get(self, cache_key: str) -> SimpleNamespace | None:
        value = await self._store.get(cache_key)
        hold = self.hold
        if hold is not None:
            self.hold = None
            self.looked.set()
            await hold.wait()
        return value

    async def set(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> None:
        await self._store.set(cache_key, value, ttl_seconds)

    async def add(self, cache_key: str, value: SimpleNamespace, ttl_seconds: int) -> bool:
        return await self._store.add(cache_key, value, ttl_seconds)

    async def invalidate(
        self, cache_key: str, replacement: SimpleNamespace | None, ttl_seconds: int
    ) -> InvalidationReport:
        return await self._store.invalidate(cache_key, replacement, ttl_seconds)

    async def delete(self, cache_key: str) -> None:
        await self._store.delete(cache_key)

    async def clear(self) -> None:
        await self._store.clear()


async def test_a_read_that_missed_before_anothers_fill_does_not_look_up_again(
    repository: InMemoryApiKeyRepository, clock: Clock
) -> None:
    cache = StragglingReads()
    service = ApiKeyService(cache, repository, clock=clock)
    created = await service.create("match-server", ["read"])
    release = cache.hold = asyncio.Event()
    straggler = asyncio.create_task(service.authenticate(created.plaintext))
    await cache.looked.wait()  # the straggler has seen "not cached" and is held

    await service.authenticate(created.plaintext)  # the first flight: lookup and fill
    release.set()
    caller = await straggler

    assert caller.prefix == created.record.prefix
    assert service.metrics.repository_lookups == 1
