"""Redis is a cache, never an authority: whoever can write to it gains nothing.

Each "worker" here is its own ``ApiKeyService`` (own memo, own breaker) over one shared fakeredis
server and one repository, as gunicorn workers share Redis and the database. The attacker writes
raw bytes into Redis; the assertions are on what every worker then admits.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest
from redis.asyncio import Redis

from app.domain.errors import InvalidApiKey, RepositoryUnavailable
from app.domain.keys import ALPHABET, SECRET_LENGTH, checksum, digest
from app.repositories.base import ApiKeyRecord
from app.services.apikey_service import ApiKeyService, CreatedKey
from app.services.cache_factories import guard_cache, signed_records_beside
from app.services.record_cache import SignedRecordCache
from app.services.redis_cache_backend import RedisApiKeyCacheBackend
from configs import CONFIG_DIR, ConfigError, load_settings
from tests.correctness.support import ControlledRepository

SECRET = "current-record-signing-secret"
OLD_SECRET = "previous-record-signing-secret"
ATTACKER_SECRET = "attackers-own-guessed-secret!"

Worker = Callable[..., ApiKeyService]


def forged_key(prefix: str) -> str:
    """A well-formed key with someone else's public prefix: random secret, valid checksum."""
    body = f"{prefix}_{''.join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))}"
    return body + checksum(body)


def active_value(prefix: str) -> bytes:
    return json.dumps({"apiKey": prefix, "active": True}, separators=(",", ":")).encode()


@pytest.fixture
async def make_worker(
    fake_server: fakeredis.FakeServer, repository: ControlledRepository, key_prefix: str
) -> AsyncIterator[Worker]:
    clients: list[Redis] = []

    def build(
        secret: str = SECRET,
        previous: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> ApiKeyService:
        client = fakeredis.FakeAsyncRedis(server=fake_server)
        clients.append(client)
        cache = guard_cache(
            RedisApiKeyCacheBackend(client, key_prefix=key_prefix), operation_timeout_seconds=5.0
        )
        records = signed_records_beside(cache, secret=secret, previous_secrets=previous)
        if clock is None:
            return ApiKeyService(cache, repository, records=records)
        return ApiKeyService(cache, repository, records=records, clock=clock)

    yield build
    for client in clients:
        await client.aclose()


async def refused(attempt: Awaitable[object]) -> None:
    with pytest.raises(InvalidApiKey):
        await attempt


async def test_a_value_forged_for_a_forged_key_with_an_admins_prefix_is_refused(
    make_worker: Worker, fake_redis: Redis, key_prefix: str, repository: ControlledRepository
) -> None:
    warm, fresh = make_worker(), make_worker()
    admin = await warm.create("admin", ["admin"])
    assert "admin" in (await warm.authenticate(admin.plaintext)).scopes
    forged = forged_key(admin.record.prefix)
    await fake_redis.set(key_prefix + digest(forged), active_value(admin.record.prefix), ex=60)

    # The worker that knows the admin's record, and one that never saw it.
    await refused(warm.authenticate(forged))
    await refused(fresh.authenticate(forged))
    # The database was asked (and said "unknown"): the forged value was never an answer.
    assert repository.digest_lookups >= 2


async def test_the_admins_real_signed_record_copied_to_a_forged_digest_is_refused(
    make_worker: Worker, fake_redis: Redis, key_prefix: str, repository: ControlledRepository
) -> None:
    warm = make_worker()
    admin = await warm.create("admin", ["admin"])
    await warm.authenticate(admin.plaintext)
    real_record = await fake_redis.get(key_prefix + "rec:" + admin.record.digest)
    assert real_record is not None
    forged = forged_key(admin.record.prefix)
    await fake_redis.set(key_prefix + digest(forged), active_value(admin.record.prefix), ex=60)
    await fake_redis.set(key_prefix + "rec:" + digest(forged), real_record, ex=60)

    repository.unavailable = True  # so only Redis could have said yes
    with pytest.raises(RepositoryUnavailable):
        await make_worker().authenticate(forged)
    # The copied record did not verify under the forged digest, and was removed.
    assert await fake_redis.exists(key_prefix + "rec:" + digest(forged)) == 0


def _attacker_record(cache_key: str, record: ApiKeyRecord, *, signed: bool) -> bytes:
    """What an attacker can write: signed with a secret of their own, or no MAC at all."""
    attacker = SignedRecordCache(
        guard_cache(RedisApiKeyCacheBackend(fakeredis.FakeAsyncRedis())),
        fakeredis.FakeAsyncRedis(),
        "x:",
        secret=ATTACKER_SECRET.encode(),
    )
    sealed = attacker.seal(cache_key, record, 3600)
    return sealed if signed else sealed.split(b".", 1)[1]


@pytest.mark.parametrize("signed", [True, False], ids=["attacker-signed", "unsigned"])
async def test_a_value_forged_for_a_revoked_keys_real_digest_is_refused(
    make_worker: Worker, fake_redis: Redis, key_prefix: str, signed: bool
) -> None:
    revoker, stale, fresh = make_worker(), make_worker(), make_worker()
    doomed = await revoker.create("doomed", ["admin"])
    await stale.authenticate(doomed.plaintext)  # remembers the key while it was active
    result = await revoker.revoke(doomed.record.prefix)
    assert result.invalidation.confirmed
    await refused(stale.authenticate(doomed.plaintext))

    # The attacker replaces the tombstone and writes an "active" record of their own.
    cache_key = doomed.record.digest
    await fake_redis.set(key_prefix + cache_key, active_value(doomed.record.prefix), ex=60)
    active_record = ApiKeyRecord(
        prefix=doomed.record.prefix,
        name="doomed",
        scopes=("admin",),
        created_at=doomed.record.created_at,
        digest=cache_key,
    )
    await fake_redis.set(
        key_prefix + "rec:" + cache_key, _attacker_record(cache_key, active_record, signed=signed)
    )

    for worker in (stale, fresh, revoker):
        await refused(worker.authenticate(doomed.plaintext))


async def test_a_tombstone_wins_over_a_record_that_still_says_active(
    make_worker: Worker, fake_redis: Redis, key_prefix: str, repository: ControlledRepository
) -> None:
    revoker = make_worker()
    doomed = await revoker.create("doomed", ["read"])
    await revoker.authenticate(doomed.plaintext)
    await revoker.revoke(doomed.record.prefix)
    # The record entry written at the fill is untouched by the revocation: still "active".
    assert await fake_redis.exists(key_prefix + "rec:" + doomed.record.digest) == 1

    repository.unavailable = True
    with pytest.raises(InvalidApiKey, match="revoked"):
        await make_worker().authenticate(doomed.plaintext)


async def test_a_fresh_worker_admits_a_cached_key_with_its_scopes_while_the_database_is_down(
    make_worker: Worker, repository: ControlledRepository
) -> None:
    filler = make_worker()
    cached = await filler.create("cached", ["read", "write"])
    uncached = await filler.create("uncached", ["read"])
    await filler.authenticate(cached.plaintext)

    repository.unavailable = True
    fresh = make_worker()
    identity = await fresh.authenticate(cached.plaintext)
    assert identity.prefix == cached.record.prefix
    assert identity.scopes == frozenset({"read", "write"})
    assert identity.expires_at is None
    with pytest.raises(RepositoryUnavailable):
        await fresh.authenticate(uncached.plaintext)


async def test_expiry_is_checked_on_a_record_read_from_redis(
    make_worker: Worker, repository: ControlledRepository
) -> None:
    filler = make_worker()
    expiring: CreatedKey = await filler.create("expiring", ["read"], expires_in_seconds=3600)
    await filler.authenticate(expiring.plaintext)

    repository.unavailable = True
    later = datetime.now(UTC) + timedelta(hours=2)
    with pytest.raises(InvalidApiKey, match="expired"):
        await make_worker(clock=lambda: later).authenticate(expiring.plaintext)
    identity = await make_worker().authenticate(expiring.plaintext)
    assert identity.expires_at == expiring.record.expires_at


async def test_records_signed_with_a_previous_secret_verify_during_a_rotation(
    make_worker: Worker, fake_redis: Redis, key_prefix: str, repository: ControlledRepository
) -> None:
    before = make_worker(secret=OLD_SECRET)
    key = await before.create("rotating", ["read"])
    await before.authenticate(key.plaintext)

    repository.unavailable = True
    after = make_worker(secret=SECRET, previous=f" {OLD_SECRET} ,")
    assert (await after.authenticate(key.plaintext)).prefix == key.record.prefix
    # A worker that knows neither the old secret nor the record: a miss, and the entry goes.
    stranger = make_worker(secret=ATTACKER_SECRET)
    with pytest.raises(RepositoryUnavailable):
        await stranger.authenticate(key.plaintext)
    assert await fake_redis.exists(key_prefix + "rec:" + key.record.digest) == 0


@pytest.mark.parametrize(
    "garbage",
    [b"garbage", b"0" * 64 + b".{}", b"\xff" * 100, b""],
    ids=["text", "zero-mac", "binary", "empty"],
)
async def test_a_corrupt_record_entry_is_a_miss_and_is_removed(
    make_worker: Worker,
    fake_redis: Redis,
    key_prefix: str,
    repository: ControlledRepository,
    garbage: bytes,
) -> None:
    filler = make_worker()
    key = await filler.create("cached", ["read"])
    await filler.authenticate(key.plaintext)
    record_key = key_prefix + "rec:" + key.record.digest
    await fake_redis.set(record_key, garbage)

    repository.unavailable = True
    with pytest.raises(RepositoryUnavailable):
        await make_worker().authenticate(key.plaintext)
    assert await fake_redis.exists(record_key) == 0

    # With the database back, the miss is answered there and the record is written again.
    repository.unavailable = False
    lookups = repository.digest_lookups
    assert (await make_worker().authenticate(key.plaintext)).prefix == key.record.prefix
    assert repository.digest_lookups == lookups + 1
    assert await fake_redis.exists(record_key) == 1


async def test_the_documented_value_is_unchanged_beside_the_record(
    make_worker: Worker, fake_redis: Redis, key_prefix: str
) -> None:
    worker = make_worker()
    key = await worker.create("cached", ["read"])
    await worker.authenticate(key.plaintext)
    stored = await fake_redis.get(key_prefix + key.record.digest)
    assert stored == b'{"apiKey":"%s","active":true}' % key.record.prefix.encode()


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis", "tiered"])
def test_a_redis_backed_cache_without_a_secret_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.delenv("APIKEY_CACHE_HMAC_SECRET")
    config = tmp_path / "no-secret.env"
    config.write_text(f"APIKEY_CACHE_BACKEND={backend}\nREDIS_URL=redis://127.0.0.1:6379/0\n")
    with pytest.raises(ConfigError, match="APIKEY_CACHE_HMAC_SECRET"):
        load_settings(config)
    short = tmp_path / "short-secret.env"
    short.write_text(config.read_text() + "APIKEY_CACHE_HMAC_SECRET=short\n")
    with pytest.raises(ConfigError, match="APIKEY_CACHE_HMAC_SECRET"):
        load_settings(short)


@pytest.mark.parametrize("name", ["redis.env", "tiered.env"])
def test_the_shipped_configs_carry_a_development_secret(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.delenv("APIKEY_CACHE_HMAC_SECRET")
    settings = load_settings(CONFIG_DIR / name)
    secret = settings.APIKEY_CACHE_HMAC_SECRET
    assert secret is not None
    assert secret.get_secret_value() not in repr(settings)
