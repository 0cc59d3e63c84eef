"""Races of the key lifecycle: a revocation is final when it returns, a rotation has one winner.

The lead's promise (revoke and rotate are each one transaction with a conditional update and
one event) is checked under real concurrency: ``N`` admin requests at once through httpx's
``ASGITransport``, repeated for ``TRIALS`` trials, on SQLite and on PostgreSQL, and on
PostgreSQL also split across two app instances over the same database, so the requests are not
serialised by one app's event loop or connection pool. Every trial asserts the outcome, and the
keys a losing rotation generated (recorded from the services' key generators) are proven dead:
a 409 must never leave a working key behind.

The service-level tests at the end cover the deadline firing after the commit (the revoke still
revokes, and the log carries it) and the event log itself: one event per change, in the change's
own transaction, and ids that a concurrent reader never skips on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.container import Container, build_container
from app.core.resources import close_container_resources
from app.db.engine import build_engine, build_session_factory
from app.db.models import ApiKeyRow, KeyEventRow
from app.domain.errors import InvalidApiKey, KeyNotActive, RepositoryUnavailable
from app.domain.keys import ParsedApiKey, digest, generate_api_key
from app.main import create_app
from app.repositories.base import ApiKeyRecord, KeyEvent
from app.repositories.sql import SqlApiKeyRepository, SqlEventLogRepository
from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend
from app.services.apikey_service import ApiKeyService, CreatedKey
from configs import Settings
from tests.support.databases import run_sql
from tests.support.db_fixtures import database_url, module_postgres_url  # noqa: F401

N = 20
TRIALS = 20
RACE_DATABASE_TIMEOUT_SECONDS = 20.0
SUCCESSOR_DETAIL = "the key was already rotated: its successor is {}"
NOT_ACTIVE_DETAIL = "the key is revoked or expired"


# -- apps over one database ----------------------------------------------------------------------


@dataclass
class KeyRecorder:
    """Wraps the key generator so a test can learn every key a rotation generated."""

    generated: list[ParsedApiKey] = field(default_factory=list)

    def __call__(self) -> ParsedApiKey:
        parsed = generate_api_key()
        self.generated.append(parsed)
        return parsed


@dataclass
class Cluster:
    """One or more apps over the same database, and an admin key they all accept."""

    clients: list[httpx.AsyncClient]
    containers: list[Container]
    recorder: KeyRecorder
    admin: CreatedKey
    engine: AsyncEngine

    @property
    def service(self) -> ApiKeyService:
        service: ApiKeyService = self.containers[0].apikey_service()
        return service

    def client(self, i: int) -> httpx.AsyncClient:
        """Request ``i`` goes to app ``i mod apps``: the apps' requests interleave."""
        return self.clients[i % len(self.clients)]

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"X-API-Key": self.admin.plaintext if key is None else key}

    async def works(self, plaintext: str) -> bool:
        """Whether every app admits ``plaintext`` (401 on any app counts as "does not work")."""
        answers = [
            (await client.get("/v1/me", headers=self.auth(plaintext))).status_code
            for client in self.clients
        ]
        assert set(answers) <= {200, 401}, answers
        return answers == [200] * len(answers)

    async def row(self, prefix: str) -> ApiKeyRow | None:
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            return await session.get(ApiKeyRow, prefix)

    async def expiry_of(self, prefix: str) -> datetime | None:
        row = await self.row(prefix)
        assert row is not None, prefix
        return row.expires_at

    async def rows_named(self, name: str) -> list[ApiKeyRow]:
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            return list(await session.scalars(select(ApiKeyRow).where(ApiKeyRow.name == name)))

    async def events_of(self, prefix: str) -> list[KeyEventRow]:
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            rows = await session.scalars(
                select(KeyEventRow).where(KeyEventRow.prefix == prefix).order_by(KeyEventRow.id)
            )
            return list(rows)


def _empty(url: str) -> None:
    """PostgreSQL databases live for the module: start each test without earlier events or
    members (a member left behind would hold up every finality until its lease lapsed)."""
    if url.startswith("postgresql"):
        run_sql(url, "DELETE FROM key_events")
        run_sql(url, "DELETE FROM members")


@pytest.fixture
def empty_database(database_url: str) -> str:  # noqa: F811
    _empty(database_url)
    return database_url


@pytest.fixture
def empty_postgres(module_postgres_url: str) -> str:  # noqa: F811
    _empty(module_postgres_url)
    return module_postgres_url


@pytest.fixture(params=[1, 2], ids=["one-app", "two-apps"])
async def cluster(request: pytest.FixtureRequest, empty_database: str) -> AsyncIterator[Cluster]:
    """``apps`` in-process apps (memory cache, fast log polling) over the database.

    Two apps on SQLite are two gunicorn workers on one file; on PostgreSQL, two hosts.

    The database deadline is raised from its 2 s default: twenty writers queued on SQLite's one
    lock can take longer than that on a loaded two-core machine, and a request past its deadline
    is rightly answered 503. What is tested here is who wins, not how long the queue is.
    """
    apps: int = request.param
    url = empty_database
    recorder = KeyRecorder()
    containers: list[Container] = []
    clients: list[httpx.AsyncClient] = []
    for _ in range(apps):
        container = build_container(
            Settings(
                DATABASE_URL=url,
                DATABASE_TIMEOUT_SECONDS=RACE_DATABASE_TIMEOUT_SECONDS,
                APIKEY_CACHE_BACKEND="memory",
                APIKEY_REVOCATION_POLL_MS=20,
            )
        )
        container.apikey_service.add_kwargs(key_generator=recorder)
        containers.append(container)
        clients.append(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(container=container)),
                base_url="http://api",
            )
        )
    engine = build_engine(url)
    try:
        service: ApiKeyService = containers[0].apikey_service()
        admin = await service.create("admin", ["admin", "read", "write"])
        yield Cluster(clients, containers, recorder, admin, engine)
    finally:
        for client in clients:
            await client.aclose()
        for container in containers:
            await close_container_resources(container)
            container.unwire()
        await engine.dispose()


async def _victim(cluster: Cluster, name: str, expires_in: int | None) -> CreatedKey:
    created = await cluster.service.create(name, ["read"], expires_in)
    cluster.recorder.generated.clear()
    return created


async def _assert_dead(cluster: Cluster, keys: list[ParsedApiKey], winner: str | None) -> None:
    """Every generated key but the winner's is neither stored nor admitted by any app."""
    losers = [parsed for parsed in keys if parsed.prefix != winner]
    async with AsyncSession(cluster.engine) as session:
        stored = await session.scalars(
            select(ApiKeyRow.prefix).where(ApiKeyRow.prefix.in_([p.prefix for p in losers]))
        )
        assert list(stored) == []
    admitted = await asyncio.gather(*(cluster.works(parsed.plaintext) for parsed in losers))
    assert not any(admitted)


# -- rotate against rotate -----------------------------------------------------------------------


@pytest.mark.slow
async def test_concurrent_rotations_have_exactly_one_winner(cluster: Cluster) -> None:
    """Trials alternate between a key with an expiry and one without."""
    for trial in range(TRIALS):
        expires_in = 3600 if trial % 2 == 0 else None
        name = f"rotated-{trial}"
        old = await _victim(cluster, name, expires_in)
        prefix = old.record.prefix
        responses = await asyncio.gather(
            *(
                cluster.client(i).post(
                    f"/v1/keys/{prefix}/rotate", json={"grace_seconds": 300}, headers=cluster.auth()
                )
                for i in range(N)
            )
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201] + [409] * (N - 1), (trial, statuses)
        (won,) = [response.json() for response in responses if response.status_code == 201]
        successor = won["prefix"]
        for response in responses:
            if response.status_code == 409:
                assert response.json()["detail"] == SUCCESSOR_DETAIL.format(successor), trial

        # Exactly one successor in the database, named by the old row.
        old_row = await cluster.row(prefix)
        assert old_row is not None and old_row.successor_prefix == successor
        assert sorted(row.prefix for row in await cluster.rows_named(name)) == sorted(
            [prefix, successor]
        )
        new_row = await cluster.row(successor)
        assert new_row is not None and new_row.successor_prefix is None
        # The successor keeps the old key's own expiry, never the grace.
        assert new_row.expires_at == old.record.expires_at
        assert won["expires_at"] == (
            None if old.record.expires_at is None else _iso(old.record.expires_at)
        )
        assert [event.kind for event in await cluster.events_of(prefix)] == ["rotated"]

        assert await cluster.works(won["key"])
        assert await cluster.works(old.plaintext)  # inside its grace
        assert len(cluster.recorder.generated) >= N
        await _assert_dead(cluster, cluster.recorder.generated, successor)


def _iso(moment: datetime) -> str:
    """How the API writes a datetime (pydantic's JSON form, ``Z`` for UTC)."""
    return moment.isoformat().replace("+00:00", "Z")


# -- rotate against revoke -----------------------------------------------------------------------


@pytest.mark.slow
async def test_rotations_racing_a_revocation_never_leave_a_working_successor_of_a_revoked_key(
    cluster: Cluster,
) -> None:
    """One revoke among ``N - 1`` rotations, at a different place in each trial.

    Whichever committed first, the revoke revokes the old key. If a rotation committed first,
    its successor is a key of its own and stays valid (a revoke names one key: rotating
    and then revoking the old key ends the grace early, it does not undo the rotation). If the
    revocation committed first, every rotation is a 409 without a successor and no key was
    added.
    """
    outcomes = {"rotation first": 0, "revocation first": 0}
    for trial in range(TRIALS):
        name = f"raced-{trial}"
        old = await _victim(cluster, name, 3600)
        prefix = old.record.prefix
        revoke_at = (trial * 7) % N

        def request(i: int, prefix: str = prefix, revoke_at: int = revoke_at) -> Any:
            action = "revoke" if i == revoke_at else "rotate"
            body = None if action == "revoke" else {"grace_seconds": 300}
            return cluster.client(i).post(
                f"/v1/keys/{prefix}/{action}", json=body, headers=cluster.auth()
            )

        responses = await asyncio.gather(*(request(i) for i in range(N)))
        revoked = responses[revoke_at]
        assert revoked.status_code == 200, (trial, revoked.text)
        assert revoked.json()["revoked_at"] is not None
        rotations = [r for i, r in enumerate(responses) if i != revoke_at]
        assert {r.status_code for r in rotations} <= {201, 409}
        won = [r.json() for r in rotations if r.status_code == 201]
        assert len(won) <= 1, trial

        old_row = await cluster.row(prefix)
        assert old_row is not None and old_row.revoked_at is not None
        assert not await cluster.works(old.plaintext)
        kinds = [event.kind for event in await cluster.events_of(prefix)]
        if won:
            outcomes["rotation first"] += 1
            successor = won[0]["prefix"]
            assert kinds == ["rotated", "revoked"], trial
            assert old_row.successor_prefix == successor
            for response in rotations:
                if response.status_code == 409:
                    assert response.json()["detail"] == SUCCESSOR_DETAIL.format(successor)
            new_row = await cluster.row(successor)
            assert new_row is not None and new_row.revoked_at is None
            assert new_row.expires_at == old.record.expires_at
            assert await cluster.works(won[0]["key"])
        else:
            outcomes["revocation first"] += 1
            successor = None
            assert kinds == ["revoked"], trial
            assert old_row.successor_prefix is None
            assert [r.json()["detail"] for r in rotations] == [NOT_ACTIVE_DETAIL] * (N - 1)
            assert [row.prefix for row in await cluster.rows_named(name)] == [prefix]
        await _assert_dead(cluster, cluster.recorder.generated, successor)
    print(f"rotate/revoke outcomes over {TRIALS} trials: {outcomes}")


async def test_revoking_the_old_key_after_a_rotation_revokes_only_the_old_key(
    cluster: Cluster,
) -> None:
    old = await _victim(cluster, "rotate-then-revoke", 3600)
    prefix = old.record.prefix
    rotated = await cluster.client(0).post(
        f"/v1/keys/{prefix}/rotate", json={"grace_seconds": 300}, headers=cluster.auth()
    )
    assert rotated.status_code == 201
    revoked = await cluster.client(1).post(f"/v1/keys/{prefix}/revoke", headers=cluster.auth())
    assert revoked.status_code == 200
    assert not await cluster.works(old.plaintext)
    assert await cluster.works(rotated.json()["key"])


# -- rotate inside the grace ---------------------------------------------------------------------


@pytest.mark.parametrize("expires_in", [3600, None], ids=["expiring", "no-expiry"])
async def test_rotating_a_key_inside_its_grace_is_409_naming_the_successor(
    cluster: Cluster, expires_in: int | None
) -> None:
    old = await _victim(cluster, "graced", expires_in)
    prefix = old.record.prefix
    first = await cluster.client(0).post(
        f"/v1/keys/{prefix}/rotate", json={"grace_seconds": 600}, headers=cluster.auth()
    )
    assert first.status_code == 201
    successor = first.json()["prefix"]
    narrowed = await cluster.expiry_of(prefix)
    assert narrowed is not None
    assert await cluster.works(old.plaintext)  # still inside the grace

    for i in range(3):
        again = await cluster.client(i).post(
            f"/v1/keys/{prefix}/rotate", json={"grace_seconds": 60}, headers=cluster.auth()
        )
        assert again.status_code == 409
        assert again.json()["detail"] == SUCCESSOR_DETAIL.format(successor)
    # The refused rotations changed nothing: the old key keeps its grace, one successor.
    assert await cluster.expiry_of(prefix) == narrowed
    assert len(await cluster.rows_named("graced")) == 2

    # The successor carries the original expiry, and so does its own successor.
    new_row = await cluster.row(successor)
    assert new_row is not None and new_row.expires_at == old.record.expires_at
    if old.record.expires_at is not None:
        assert new_row.expires_at != narrowed
    second = await cluster.client(1).post(
        f"/v1/keys/{successor}/rotate", json={"grace_seconds": 5}, headers=cluster.auth()
    )
    assert second.status_code == 201
    third = await cluster.row(second.json()["prefix"])
    assert third is not None and third.expires_at == old.record.expires_at


# -- a revoke whose request times out after the commit -------------------------------------------


class _StallAfterCommit(AsyncSession):
    """A session whose commit lands, and then does not return (a reply lost on the wire).

    ``stalls`` counts the commits still to stall; ``committed`` is set after each real commit.
    """

    stalls = 0
    committed: asyncio.Event | None = None

    async def commit(self) -> None:
        await super().commit()
        cls = type(self)
        if cls.committed is not None:
            cls.committed.set()
        if cls.stalls > 0:
            cls.stalls -= 1
            await asyncio.Event().wait()  # until the deadline or a cancellation


HEALTHY_CALL_DEADLINE_SECONDS = 5.0


@dataclass
class Database:
    url: str
    engine: AsyncEngine

    def service(self, factory: async_sessionmaker[AsyncSession] | None = None) -> ApiKeyService:
        """A service over this database; over ``factory``'s sessions (a stalling one) when given.

        Only a stalling factory gets the short 0.5 s deadline its stalls run into; over healthy
        sessions the deadline is a loaded machine's first SQLite call's, not a test's subject.
        """
        sessions = factory if factory is not None else build_session_factory(self.engine)
        timeout_seconds = HEALTHY_CALL_DEADLINE_SECONDS if factory is None else 0.5
        return ApiKeyService(
            InMemoryApiKeyCacheBackend(),
            SqlApiKeyRepository(sessions, timeout_seconds=timeout_seconds),
            event_log=SqlEventLogRepository(sessions, timeout_seconds=2.0),
            poll_interval_seconds=0.02,
        )

    def stalling_sessions(self) -> async_sessionmaker[AsyncSession]:
        return async_sessionmaker(self.engine, class_=_StallAfterCommit, expire_on_commit=False)

    async def events(self) -> list[KeyEvent]:
        return await SqlEventLogRepository(build_session_factory(self.engine)).events_after(
            0, 10_000
        )


@pytest.fixture
async def database(empty_database: str) -> AsyncIterator[Database]:
    url = empty_database
    engine = build_engine(url)
    _StallAfterCommit.stalls = 0
    _StallAfterCommit.committed = None
    try:
        yield Database(url, engine)
    finally:
        await engine.dispose()


async def _fresh_service_refuses(database: Database, plaintext: str, prefix: str) -> None:
    """A service that never saw the revoke (new engine, empty cache) refuses the key."""
    engine = build_engine(database.url)
    try:
        fresh = Database(database.url, engine).service()
        with pytest.raises(InvalidApiKey):
            await fresh.authenticate(plaintext)
        await fresh.aclose()
    finally:
        await engine.dispose()
    revocations = [e for e in await database.events() if e.prefix == prefix]
    assert [e.kind for e in revocations] == ["revoked"]


async def test_a_revoke_whose_deadline_fires_after_the_commit_still_revokes(
    database: Database,
) -> None:
    creator = database.service()
    created = await creator.create("slow-reply", ["read"])
    prefix = created.record.prefix
    await creator.authenticate(created.plaintext)

    service = database.service(database.stalling_sessions())
    _StallAfterCommit.stalls = 1
    result = await service.revoke(prefix)  # the first commit's reply never comes

    assert _StallAfterCommit.stalls == 0  # the deadline did fire after a commit
    assert result.record.revoked_at is not None
    (event,) = [e for e in await database.events() if e.prefix == prefix]
    assert result.finality.final
    with pytest.raises(InvalidApiKey):
        await service.authenticate(created.plaintext)
    await _fresh_service_refuses(database, created.plaintext, prefix)
    assert event.kind == "revoked"
    await service.aclose()
    await creator.aclose()


async def test_a_revoke_cancelled_after_the_commit_still_revokes(database: Database) -> None:
    creator = database.service()
    created = await creator.create("cancelled", ["read"])
    prefix = created.record.prefix
    await creator.authenticate(created.plaintext)

    service = database.service(database.stalling_sessions())
    await service.authenticate(created.plaintext)  # cached "active" in this process
    committed = asyncio.Event()
    _StallAfterCommit.committed = committed
    _StallAfterCommit.stalls = 1
    revoke = asyncio.create_task(service.revoke(prefix))
    await asyncio.wait_for(committed.wait(), timeout=10)
    revoke.cancel()
    with pytest.raises(asyncio.CancelledError):
        await revoke

    await _fresh_service_refuses(database, created.plaintext, prefix)
    # The process whose revoke was cut short never dropped its own copy; the log does it.
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        try:
            await service.authenticate(created.plaintext)
        except InvalidApiKey:
            break
        assert asyncio.get_running_loop().time() < deadline, "the log never reached this process"
        await asyncio.sleep(0.02)
    await service.aclose()
    await creator.aclose()


# -- the event log -------------------------------------------------------------------------------


async def test_every_change_writes_exactly_one_event_and_a_refused_one_none(
    database: Database,
) -> None:
    service = database.service()
    created = await service.create("logged", ["read"], 3600)
    prefix = created.record.prefix

    async def kinds() -> list[tuple[str, str]]:
        return [(e.prefix, e.kind) for e in await database.events()]

    assert await kinds() == []
    rotation = await service.rotate(prefix, 60)
    successor = rotation.new_key.record.prefix
    assert await kinds() == [(prefix, "rotated")]
    with pytest.raises(KeyNotActive):
        await service.rotate(prefix, 60)
    assert await kinds() == [(prefix, "rotated")]
    await service.revoke(prefix)
    await service.revoke(prefix)  # already revoked: an answer, not a second change
    assert await kinds() == [(prefix, "rotated"), (prefix, "revoked")]
    with pytest.raises(KeyNotActive):
        await service.rotate(prefix, 0)
    await service.revoke(successor)
    with pytest.raises(KeyNotActive):
        await service.rotate(successor, 0)
    assert await kinds() == [(prefix, "rotated"), (prefix, "revoked"), (successor, "revoked")]
    ids = [e.id for e in await database.events()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    await service.aclose()


class _EventWritesFail(AsyncSession):
    """A session whose flush fails whenever it would write an event row."""

    async def flush(self, objects: Any = None) -> None:
        if any(isinstance(obj, KeyEventRow) for obj in self.new):
            raise OperationalError("INSERT INTO key_events", {}, Exception("disk full"))
        await super().flush(objects)


@pytest.mark.parametrize("change", ["revoke", "rotate"])
async def test_a_change_whose_event_cannot_be_written_does_not_happen(
    database: Database, change: str
) -> None:
    """The event is written in the change's own transaction: no event, no change."""
    service = database.service()
    created = await service.create("atomic", ["read"], 3600)
    prefix = created.record.prefix
    failing = SqlApiKeyRepository(
        async_sessionmaker(database.engine, class_=_EventWritesFail, expire_on_commit=False)
    )
    with pytest.raises(RepositoryUnavailable):
        if change == "revoke":
            await failing.revoke(prefix, created.record.created_at + timedelta(seconds=1))
        else:
            await failing.rotate(
                prefix,
                ApiKeyRecord(
                    prefix=generate_api_key().prefix,
                    name="atomic",
                    scopes=("read",),
                    created_at=created.record.created_at,
                    digest=digest("never-issued"),
                ),
                created.record.created_at + timedelta(seconds=60),
                created.record.created_at + timedelta(seconds=1),
            )
    record = await SqlApiKeyRepository(build_session_factory(database.engine)).get_by_prefix(prefix)
    assert record is not None and record.revoked_at is None
    assert record.expires_at == created.record.expires_at
    async with AsyncSession(database.engine) as session:
        row = await session.get(ApiKeyRow, prefix)
        assert row is not None and row.successor_prefix is None
        named = await session.scalar(
            select(func.count()).select_from(ApiKeyRow).where(ApiKeyRow.name == "atomic")
        )
        assert named == 1
    assert await database.events() == []
    await service.authenticate(created.plaintext)
    await service.aclose()


@pytest.mark.postgres
async def test_event_ids_commit_in_order_under_concurrent_revokes_from_two_apps(
    empty_postgres: str,
) -> None:
    """A reader that follows ``events_after(last)`` while 20 revokes commit from two apps
    sees every one: ids are handed out in commit order, so no later id commits first."""
    async with _two_apps(empty_postgres) as (clients, service, engine):
        admin = await service.create("admin", ["admin"])
        keys = [await service.create(f"doomed-{i}", ["read"]) for i in range(N)]
        log = SqlEventLogRepository(build_session_factory(engine))
        start = await log.last_event_id()
        seen: list[KeyEvent] = []
        done = asyncio.Event()

        async def follow() -> None:
            last = start
            while True:
                finished = done.is_set()
                batch = await log.events_after(last, 1000)
                seen.extend(batch)
                if batch:
                    last = batch[-1].id
                elif finished:
                    return
                else:
                    await asyncio.sleep(0)

        follower = asyncio.create_task(follow())
        responses = await asyncio.gather(
            *(
                clients[i % 2].post(
                    f"/v1/keys/{key.record.prefix}/revoke",
                    headers={"X-API-Key": admin.plaintext},
                )
                for i, key in enumerate(keys)
            )
        )
        done.set()
        await asyncio.wait_for(follower, timeout=10)
        assert [r.status_code for r in responses] == [200] * N

        ids = [event.id for event in seen]
        assert all(a < b for a, b in itertools.pairwise(ids)), ids
        assert sorted(event.prefix for event in seen) == sorted(k.record.prefix for k in keys)
        assert ids == [e.id for e in await log.events_after(start, 1000)]


class _two_apps:  # noqa: N801 - used as an async context manager, like a function
    """Two in-process apps on one PostgreSQL database, and the first one's service."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._containers: list[Container] = []
        self._clients: list[httpx.AsyncClient] = []
        self._engine = build_engine(url)

    async def __aenter__(
        self,
    ) -> tuple[list[httpx.AsyncClient], ApiKeyService, AsyncEngine]:
        for _ in range(2):
            container = build_container(
                Settings(
                    DATABASE_URL=self._url,
                    APIKEY_CACHE_BACKEND="memory",
                    APIKEY_REVOCATION_POLL_MS=20,
                )
            )
            self._containers.append(container)
            self._clients.append(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=create_app(container=container)),
                    base_url="http://api",
                )
            )
        service: ApiKeyService = self._containers[0].apikey_service()
        return self._clients, service, self._engine

    async def __aexit__(self, *_exc: object) -> None:
        for client in self._clients:
            await client.aclose()
        for container in self._containers:
            await close_container_resources(container)
            container.unwire()
        await self._engine.dispose()


class _FirstCommitWaitsForTheReader(AsyncSession):
    """The first revoke to reach its commit holds it until the reader has seen some event
    (or half a second has passed): the widest window for a later id to commit first."""

    held = False
    reader_saw_something: asyncio.Event | None = None

    async def commit(self) -> None:
        cls = type(self)
        if not cls.held and cls.reader_saw_something is not None:
            cls.held = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cls.reader_saw_something.wait(), timeout=0.5)
        await super().commit()


@pytest.mark.postgres
async def test_an_event_held_before_its_commit_is_not_skipped_by_a_reader(
    empty_postgres: str,
) -> None:
    """Twenty revokes from two engines while one holds its commit: without the ordering of
    event writes, the others' later ids commit first, the reader moves past the held one's id,
    and never sees it."""
    engines = [build_engine(empty_postgres) for _ in range(2)]
    try:
        plain = SqlApiKeyRepository(build_session_factory(engines[0]))
        creator = ApiKeyService(InMemoryApiKeyCacheBackend(), plain)
        prefixes = [(await creator.create(f"held-{i}", ["read"])).record.prefix for i in range(N)]
        log = SqlEventLogRepository(build_session_factory(engines[0]))
        saw = asyncio.Event()
        _FirstCommitWaitsForTheReader.held = False
        _FirstCommitWaitsForTheReader.reader_saw_something = saw
        repositories = [
            SqlApiKeyRepository(
                async_sessionmaker(
                    engine, class_=_FirstCommitWaitsForTheReader, expire_on_commit=False
                )
            )
            for engine in engines
        ]
        seen: list[KeyEvent] = []
        done = asyncio.Event()

        async def follow() -> None:
            last = 0
            while True:
                finished = done.is_set()
                batch = await log.events_after(last, 1000)
                seen.extend(batch)
                if batch:
                    last = batch[-1].id
                    saw.set()
                elif finished:
                    return
                else:
                    await asyncio.sleep(0)

        follower = asyncio.create_task(follow())
        at = datetime.now(UTC)
        revocations = await asyncio.gather(
            *(repositories[i % 2].revoke(prefix, at) for i, prefix in enumerate(prefixes))
        )
        done.set()
        await asyncio.wait_for(follower, timeout=10)
        assert all(r is not None and r.newly_revoked for r in revocations)
        assert sorted(event.prefix for event in seen) == sorted(prefixes)
        ids = [event.id for event in seen]
        assert all(a < b for a, b in itertools.pairwise(ids)), ids
    finally:
        _FirstCommitWaitsForTheReader.reader_saw_something = None
        for engine in engines:
            await engine.dispose()
