"""The cache-aside race between a slow fill and a revocation, forced for every backend.

Request A misses, reads "active" from the database and is held there; revoke commits, writes its
tombstone and returns; then A resumes and tries to fill the cache with what it read. Because
fills only add when nothing is cached (``SET NX``), A's stale value cannot replace the tombstone,
and no request after revoke returned is admitted. The control test runs the same interleaving on
a backend whose fill is a plain ``SET`` and shows the stale admit the mechanism prevents.
"""

from __future__ import annotations

import asyncio

import pytest

from app.domain.errors import InvalidApiKey
from app.domain.keys import digest
from app.services.apikey_service import ApiKeyService, AuthenticatedKey
from app.services.cache_protocol import CoherentCacheBackend
from tests.correctness.support import ControlledRepository, OverwritingFills


async def _revoke_during_a_paused_fill(
    service: ApiKeyService, repository: ControlledRepository, plaintext: str, prefix: str
) -> asyncio.Task[AuthenticatedKey]:
    """Start request A, hold it after its database read, revoke, and let A resume."""
    repository.pause_digest_reads()
    request_a = asyncio.create_task(service.authenticate(plaintext))
    await asyncio.wait_for(repository.read_done.wait(), timeout=10)

    revocation = await service.revoke(prefix)
    assert revocation.invalidation.confirmed
    assert revocation.record.revoked_at is not None

    repository.release()
    await asyncio.wait({request_a}, timeout=10)
    assert request_a.done()
    return request_a


async def test_a_fill_that_read_active_cannot_undo_a_revocation(
    backend: CoherentCacheBackend, repository: ControlledRepository
) -> None:
    service = ApiKeyService(backend, repository, cache_ttl_seconds=60)
    created = await service.create("race", ["read"])

    request_a = await _revoke_during_a_paused_fill(
        service, repository, created.plaintext, created.record.prefix
    )

    # A started before revoke returned; whatever it got, it must not have filled "active".
    assert isinstance(request_a.exception(), InvalidApiKey)
    cached = await backend.get(digest(created.plaintext))
    assert cached is not None and cached.active is False
    lookups_after_revoke = repository.digest_lookups
    for _ in range(3):
        with pytest.raises(InvalidApiKey):
            await service.authenticate(created.plaintext)
    # Refused by the tombstone itself, not by a fresh database read.
    assert repository.digest_lookups == lookups_after_revoke


async def test_a_second_service_sharing_the_cache_refuses_after_the_race(
    shared_backend: CoherentCacheBackend, repository: ControlledRepository
) -> None:
    """Another worker with no memo of the key reads only the shared cache (redis backends)."""
    backend = shared_backend
    service = ApiKeyService(backend, repository, cache_ttl_seconds=60)
    created = await service.create("race", ["read"])
    await _revoke_during_a_paused_fill(
        service, repository, created.plaintext, created.record.prefix
    )

    other_worker = ApiKeyService(backend, repository, cache_ttl_seconds=60)
    with pytest.raises(InvalidApiKey) as refused:
        await other_worker.authenticate(created.plaintext)
    assert refused.value.reason == "revoked"


async def test_control_a_plain_set_fill_resurrects_the_revoked_key(
    backend: CoherentCacheBackend, repository: ControlledRepository
) -> None:
    """Without fill-only-if-absent the same interleaving admits a revoked key after revoke."""
    naive = OverwritingFills(backend)
    service = ApiKeyService(naive, repository, cache_ttl_seconds=60)
    created = await service.create("race", ["read"])
    # Another reader of this cache that knows the key (and is not told of the revocation).
    other_reader = ApiKeyService(naive, repository, cache_ttl_seconds=60)
    await other_reader.authenticate(created.plaintext)
    await backend.delete(digest(created.plaintext))  # the race below needs a cold cache

    await _revoke_during_a_paused_fill(
        service, repository, created.plaintext, created.record.prefix
    )

    cached = await backend.get(digest(created.plaintext))
    assert cached is not None and cached.active is True
    # The revoking process forgot its own copies; the other reader trusts the resurrected value.
    admitted = await other_reader.authenticate(created.plaintext)
    assert admitted.prefix == created.record.prefix
