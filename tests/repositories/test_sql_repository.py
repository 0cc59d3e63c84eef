"""SqlApiKeyRepository against SQLite and a real PostgreSQL: the ``ApiKeyRepository`` contract,
aware datetimes, digest-only storage, and outages reported as ``RepositoryUnavailable``."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import build_engine, build_session_factory
from app.domain.errors import DuplicateKey, KeyNotActive, RepositoryUnavailable, UnknownKeyPrefix
from app.domain.keys import digest, generate_api_key
from app.repositories.base import ApiKeyRecord
from app.repositories.sql import SqlApiKeyRepository, SqlEventLogRepository
from tests.support.redis_server import free_port

T0 = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def make_record(
    name: str = "game-server",
    scopes: tuple[str, ...] = ("read", "write"),
    created_at: datetime = T0,
    expires_at: datetime | None = None,
) -> tuple[ApiKeyRecord, str]:
    parsed = generate_api_key()
    record = ApiKeyRecord(
        prefix=parsed.prefix,
        name=name,
        scopes=scopes,
        created_at=created_at,
        expires_at=expires_at,
        digest=digest(parsed.plaintext),
    )
    return record, parsed.plaintext


async def test_add_then_read_back_by_digest_and_prefix(repository: SqlApiKeyRepository) -> None:
    record, _ = make_record(expires_at=T0 + timedelta(days=1))
    await repository.add(record)

    assert await repository.get_by_digest(record.digest) == record
    assert await repository.get_by_prefix(record.prefix) == record
    assert await repository.get_by_digest("0" * 64) is None
    assert await repository.get_by_prefix("game_00000000") is None


async def test_datetimes_come_back_timezone_aware_utc(repository: SqlApiKeyRepository) -> None:
    other_zone = T0.astimezone(timezone(timedelta(hours=5)))
    record, _ = make_record(created_at=other_zone, expires_at=other_zone + timedelta(hours=1))
    await repository.add(record)

    stored = await repository.get_by_prefix(record.prefix)
    assert stored is not None
    assert stored.created_at.tzinfo is not None and stored.created_at.utcoffset() == timedelta(0)
    assert stored.created_at == T0
    assert stored.expires_at == T0 + timedelta(hours=1)
    assert stored.is_active(T0)


async def test_only_the_digest_is_stored(
    repository: SqlApiKeyRepository, engine: AsyncEngine
) -> None:
    record, plaintext = make_record()
    await repository.add(record)

    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM api_keys"))).all()
    stored_text = repr(rows)
    assert record.digest in stored_text
    assert plaintext not in stored_text
    assert plaintext.rsplit("_", 1)[1] not in stored_text


async def test_duplicate_prefix_or_digest_raises_duplicate_key(
    repository: SqlApiKeyRepository,
) -> None:
    record, _ = make_record()
    await repository.add(record)
    other, _ = make_record()

    with pytest.raises(DuplicateKey):
        await repository.add(dataclasses.replace(other, prefix=record.prefix))
    with pytest.raises(DuplicateKey):
        await repository.add(dataclasses.replace(other, digest=record.digest))
    await repository.add(other)  # the session is usable after a conflict


async def test_list_keys_oldest_first(repository: SqlApiKeyRepository) -> None:
    newer, _ = make_record(name="newer", created_at=T0 + timedelta(seconds=5))
    older, _ = make_record(name="older", created_at=T0)
    await repository.add(newer)
    await repository.add(older)

    assert [r.name for r in await repository.list_keys(limit=10)] == ["older", "newer"]


async def test_revoke_is_idempotent_keeps_the_first_time_and_logs_one_event(
    repository: SqlApiKeyRepository,
) -> None:
    record, _ = make_record()
    await repository.add(record)
    log = SqlEventLogRepository(repository._sessions)
    before = await log.last_event_id()

    first = await repository.revoke(record.prefix, T0 + timedelta(minutes=1))
    again = await repository.revoke(record.prefix, T0 + timedelta(minutes=2))

    assert first is not None and first.record.revoked_at == T0 + timedelta(minutes=1)
    assert again is not None and again.record.revoked_at == T0 + timedelta(minutes=1)
    assert first.newly_revoked and not again.newly_revoked
    assert again.event_id == first.event_id
    assert not again.record.is_active(T0 + timedelta(minutes=1))
    events = await log.events_after(before, 10)
    assert [(event.id, event.prefix, event.kind) for event in events] == [
        (first.event_id, record.prefix, "revoked")
    ]
    assert events[0].digest == record.digest and not events[0].shared_done
    assert await repository.revoke("game_00000000", T0) is None


async def test_the_log_is_read_from_a_point_in_time(repository: SqlApiKeyRepository) -> None:
    """Where a starting process begins: the first event that occurred at or after a time."""
    log = SqlEventLogRepository(repository._sessions)
    # Later than any other test's events: the PostgreSQL database is shared within the module.
    base = T0 + timedelta(days=400)
    revoked_at = [base + timedelta(minutes=minute) for minute in (1, 2, 3)]
    event_ids = []
    for at in revoked_at:
        record, _ = make_record()
        await repository.add(record)
        revocation = await repository.revoke(record.prefix, at)
        assert revocation is not None
        event_ids.append(revocation.event_id)

    async def first_read_from(at: datetime) -> list[int]:
        return [
            event.id for event in await log.events_after(await log.last_event_id_before(at), 10)
        ]

    assert await first_read_from(revoked_at[1]) == event_ids[1:]
    assert await first_read_from(revoked_at[1] - timedelta(seconds=1)) == event_ids[1:]
    assert (await first_read_from(base))[-3:] == event_ids
    assert await log.last_event_id_before(revoked_at[2] + timedelta(seconds=1)) == max(event_ids)


def successor_of(record: ApiKeyRecord) -> ApiKeyRecord:
    successor, _ = make_record(name=record.name, scopes=record.scopes, expires_at=record.expires_at)
    return successor


async def test_rotate_narrows_the_old_key_and_the_successor_keeps_its_own_expiry(
    repository: SqlApiKeyRepository,
) -> None:
    record, _ = make_record(expires_at=T0 + timedelta(hours=2))
    await repository.add(record)

    rotation = await repository.rotate(
        record.prefix, successor_of(record), T0 + timedelta(hours=1), T0
    )

    assert rotation.old.expires_at == T0 + timedelta(hours=1)
    assert rotation.new.expires_at == T0 + timedelta(hours=2)  # not the grace
    event = await SqlEventLogRepository(repository._sessions).event_state(rotation.event_id)
    assert event is not None and (event.prefix, event.kind) == (record.prefix, "rotated")


async def test_a_grace_never_extends_the_old_expiry(repository: SqlApiKeyRepository) -> None:
    record, _ = make_record(expires_at=T0 + timedelta(minutes=5))
    await repository.add(record)

    rotation = await repository.rotate(
        record.prefix, successor_of(record), T0 + timedelta(hours=3), T0
    )

    assert rotation.old.expires_at == T0 + timedelta(minutes=5)


async def test_a_key_rotates_once_and_never_after_revocation(
    repository: SqlApiKeyRepository,
) -> None:
    record, _ = make_record()
    revoked, _ = make_record()
    await repository.add(record)
    await repository.add(revoked)
    first = await repository.rotate(
        record.prefix, successor_of(record), T0 + timedelta(hours=1), T0
    )
    await repository.revoke(revoked.prefix, T0)

    with pytest.raises(KeyNotActive) as again:
        await repository.rotate(record.prefix, successor_of(record), T0 + timedelta(hours=1), T0)
    with pytest.raises(KeyNotActive) as after_revoke:
        await repository.rotate(revoked.prefix, successor_of(revoked), T0, T0)
    with pytest.raises(UnknownKeyPrefix):
        await repository.rotate("game_00000000", successor_of(record), T0, T0)

    assert again.value.successor == first.new.prefix
    assert after_revoke.value.successor is None


async def test_members_register_renew_and_leave(repository: SqlApiKeyRepository) -> None:
    log = SqlEventLogRepository(repository._sessions)

    await log.renew_member("m1", "host:1", 3, T0 + timedelta(seconds=10))
    await log.renew_member("m1", "host:1", 5, T0 + timedelta(seconds=20))
    await log.renew_member("m2", "host:2", 5, T0 + timedelta(seconds=5))

    live = {
        member.member_id: member for member in await log.live_members(T0 + timedelta(seconds=6))
    }
    assert set(live) == {"m1"}
    assert live["m1"].applied_event_id == 5
    await log.leave("m1")
    assert [member.member_id for member in await log.live_members(T0)] == ["m2"]


async def test_ping_answers_when_the_database_does(repository: SqlApiKeyRepository) -> None:
    await repository.ping()


# -- outages ----------------------------------------------------------------------------------


def _repository_on(url: str, timeout: float = 1.0) -> tuple[SqlApiKeyRepository, AsyncEngine]:
    engine = build_engine(url, timeout_seconds=timeout)
    return SqlApiKeyRepository(build_session_factory(engine), timeout_seconds=timeout), engine


async def test_postgres_refusing_connections_is_repository_unavailable() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test"
    repository, engine = _repository_on(url)
    try:
        with pytest.raises(RepositoryUnavailable):
            await repository.get_by_digest("0" * 64)
        with pytest.raises(RepositoryUnavailable):
            await repository.ping()
    finally:
        await engine.dispose()


async def test_sqlite_file_that_cannot_be_opened_is_repository_unavailable(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'game-api.db'}"
    repository, engine = _repository_on(url)
    try:
        with pytest.raises(RepositoryUnavailable):
            await repository.get_by_prefix("game_00000000")
    finally:
        await engine.dispose()


async def test_unmigrated_database_is_repository_unavailable(tmp_path: Path) -> None:
    repository, engine = _repository_on(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(RepositoryUnavailable):
            await repository.list_keys(limit=10)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_query_stuck_behind_a_lock_times_out_as_repository_unavailable(
    module_postgres_url: str,
) -> None:
    """A database that accepts but does not answer must cost the deadline, not forever."""
    holder = await asyncpg.connect(
        make_url(module_postgres_url).set(drivername="postgresql").render_as_string(False)
    )
    repository, engine = _repository_on(module_postgres_url, timeout=0.5)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(RepositoryUnavailable):
            await asyncio.wait_for(repository.get_by_prefix("game_00000000"), timeout=30)
        await transaction.rollback()
        assert await repository.get_by_prefix("game_00000000") is None
    finally:
        await holder.close()
        await engine.dispose()
