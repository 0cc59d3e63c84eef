"""Redis backend specifics: the exact stored bytes and TTL, prefix-scoped clear, corrupt values."""

from __future__ import annotations

import string
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from app.services.apikey_cache_backend import RedisApiKeyCacheBackend
from app.services.redis_cache_backend import decode_value, encode_value, escape_glob


@pytest.fixture(params=["fakeredis", "redis"])
def client(request: pytest.FixtureRequest) -> Redis:
    fixture = "fake_redis" if request.param == "fakeredis" else "real_redis"
    value = request.getfixturevalue(fixture)
    assert isinstance(value, Redis)
    return value


async def test_value_is_compact_json_with_set_ex(client: Redis, key_prefix: str) -> None:
    backend = RedisApiKeyCacheBackend(client, key_prefix=key_prefix)
    await backend.set("ab" * 32, SimpleNamespace(apiKey="game_AbCd1234", active=True), 45)
    await backend.set("cd" * 32, SimpleNamespace(apiKey="game_WxYz9876", active=False), 7)

    assert await client.get(key_prefix + "ab" * 32) == b'{"apiKey":"game_AbCd1234","active":true}'
    assert await client.get(key_prefix + "cd" * 32) == b'{"apiKey":"game_WxYz9876","active":false}'
    assert 40 <= await client.ttl(key_prefix + "ab" * 32) <= 45
    assert 1 <= await client.ttl(key_prefix + "cd" * 32) <= 7


async def test_default_prefix_is_documented_one(client: Redis) -> None:
    backend = RedisApiKeyCacheBackend(client)
    try:
        await backend.set("ef" * 32, SimpleNamespace(apiKey="game_AbCd1234", active=True), 5)
        assert await client.exists("game:apikey:" + "ef" * 32) == 1
    finally:
        await client.delete("game:apikey:" + "ef" * 32)


async def test_add_uses_nx_and_ex(client: Redis, key_prefix: str) -> None:
    backend = RedisApiKeyCacheBackend(client, key_prefix=key_prefix)
    await client.set(key_prefix + "01" * 32, b'{"apiKey":"game_AbCd1234","active":false}', ex=30)

    stored = await backend.add("01" * 32, SimpleNamespace(apiKey="game_AbCd1234", active=True), 60)

    assert stored is False
    assert await client.get(key_prefix + "01" * 32) == b'{"apiKey":"game_AbCd1234","active":false}'
    assert await backend.add("02" * 32, SimpleNamespace(apiKey="game_AbCd1234", active=True), 60)
    assert 55 <= await client.ttl(key_prefix + "02" * 32) <= 60


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"apiKey":"game_AbCd1234"}',
        b'{"apiKey":1,"active":true}',
        b'{"apiKey":"game_AbCd1234","active":"yes"}',
        b'{"apiKey":"game_AbCd1234","active":true,"extra":1}',
        b"[1,2,3]",
        b"\xff\xfe\x00",
        b'{"apiKey":"' + b"x" * 100_000 + b'","active":true}',
    ],
    ids=["text", "missing", "wrong-prefix-type", "wrong-active-type", "extra", "list", "binary",
         "huge"],
)  # fmt: skip
async def test_corrupt_value_is_a_miss_and_is_removed(
    client: Redis, key_prefix: str, raw: bytes
) -> None:
    backend = RedisApiKeyCacheBackend(client, key_prefix=key_prefix)
    await client.set(key_prefix + "0f" * 32, raw, ex=60)

    assert await backend.get("0f" * 32) is None
    assert await client.exists(key_prefix + "0f" * 32) == 0


async def test_clear_deletes_only_keys_under_the_prefix(client: Redis, key_prefix: str) -> None:
    backend = RedisApiKeyCacheBackend(client, key_prefix=key_prefix)
    outsider = key_prefix.rstrip(":") + "-other:keep"
    sibling = "x" + key_prefix + "keep"
    await client.set(outsider, b"1", ex=60)
    await client.set(sibling, b"1", ex=60)
    try:
        for index in range(1_500):
            await backend.set(f"{index:064x}", SimpleNamespace(apiKey="game_A", active=True), 60)

        await backend.clear()

        remaining = [key async for key in client.scan_iter(match=key_prefix + "*", count=1000)]
        assert remaining == []
        assert await client.get(outsider) == b"1"
        assert await client.get(sibling) == b"1"
    finally:
        await client.delete(outsider, sibling)


async def test_clear_escapes_glob_characters_in_the_prefix(client: Redis, key_prefix: str) -> None:
    tricky = key_prefix + "a*b?[c]:"
    lookalike = key_prefix + "aXXbZc:entry"  # matched by the prefix if read as a glob
    backend = RedisApiKeyCacheBackend(client, key_prefix=tricky)
    await client.set(lookalike, b"1", ex=60)
    await backend.set("aa" * 32, SimpleNamespace(apiKey="game_A", active=True), 60)

    await backend.clear()

    assert await client.exists(tricky + "aa" * 32) == 0
    assert await client.get(lookalike) == b"1"


def test_escape_glob_escapes_every_metacharacter() -> None:
    assert escape_glob("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"


class CommandRecorder:
    """Wraps a client and records command names; every call still reaches the real client."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self.commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def record(*args: Any, **kwargs: Any) -> Any:
            self.commands.append((name, args, kwargs))
            return attribute(*args, **kwargs)

        return record


async def test_clear_uses_bounded_scan_and_never_keys_or_flushdb(
    fake_redis: Redis, key_prefix: str
) -> None:
    recorder = CommandRecorder(fake_redis)
    backend = RedisApiKeyCacheBackend(recorder, key_prefix=key_prefix)  # type: ignore[arg-type]
    for index in range(2_100):
        await fake_redis.set(f"{key_prefix}{index:064x}", b"{}", ex=60)

    await backend.clear()

    names = [name for name, _args, _kwargs in recorder.commands]
    assert {"keys", "flushdb", "flushall"}.isdisjoint(names)
    scans = [kwargs for name, _args, kwargs in recorder.commands if name == "scan"]
    assert len(scans) >= 2, "a large keyspace must be walked in several bounded steps"
    assert all(kwargs["count"] and kwargs["match"] == key_prefix + "*" for kwargs in scans)
    assert await fake_redis.dbsize() == 0


def test_empty_prefix_is_refused(fake_redis: Redis) -> None:
    with pytest.raises(ValueError, match="key_prefix"):
        RedisApiKeyCacheBackend(fake_redis, key_prefix="")


def _decoded_by_json(raw: bytes) -> tuple[str, bool] | None:
    """What the JSON path of ``decode_value`` makes of ``raw``, as a comparable pair."""
    value = decode_value(raw.decode("latin-1"))  # a ``str`` never takes the quick reading
    return None if value is None else (value.apiKey, value.active)


@given(
    prefix=st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=80),
    active=st.booleans(),
)
def test_the_quick_reading_of_a_value_agrees_with_the_json_parser(
    prefix: str, active: bool
) -> None:
    raw = encode_value(SimpleNamespace(apiKey=prefix, active=active))
    value = decode_value(raw)
    assert value is not None
    assert (value.apiKey, value.active) == (prefix, active) == _decoded_by_json(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"apiKey":"game_ABCDEFGH","active":true,"scopes":["admin"]}',
        b'{"apiKey":"game_ABCDEFGH","active":1}',
        b'{"apiKey":"game_ABCDEFGH","active":true} ',
        b'{"apiKey":"game_ABCDEFGH","active":tru}',
        b'{"apiKey":"game\\u0041BCDEFGH","active":true}',
        b'{"active":true,"apiKey":"game_ABCDEFGH"}',
        b'{"apiKey":"' + b"A" * 600 + b'","active":true}',
    ],
)
def test_what_the_quick_reading_does_not_match_is_judged_as_before(raw: bytes) -> None:
    value = decode_value(raw)
    assert (None if value is None else (value.apiKey, value.active)) == _decoded_by_json(raw)
