"""Hostile input against the HTTP API: property-based header values, then schemathesis.

Whatever arrives in the API-key header — empty, 100 KB long, non-ASCII, control characters,
repeated, almost-valid keys with a wrong checksum — the answer is 401 (400/431 would be the
server's own), never a 5xx, and a value that is not a well-formed key reaches neither the cache
nor the repository (counted by wrappers around the real ones). Then schemathesis drives the
admin routes from the OpenAPI schema with an admin key and must find no 5xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from app.domain.keys import (
    ALPHABET,
    ID_LENGTH,
    SECRET_LENGTH,
    TYPE_PREFIX,
    MalformedApiKey,
    checksum,
    parse_api_key,
)
from app.services.apikey_service import CreatedKey
from tests.correctness.http_app import ServedApp, served_app
from tests.support.databases import migrated_sqlite_url

HEADER = b"x-api-key"
ACCEPTABLE = {400, 401, 431}
VICTIMS = 8


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return migrated_sqlite_url(tmp_path)


@pytest.fixture
async def served(
    sqlite_url: str, fake_server: fakeredis.FakeServer, key_prefix: str
) -> AsyncIterator[ServedApp]:
    """The real app on SQLite and the guarded Redis backend (fakeredis)."""
    client = fakeredis.FakeAsyncRedis(server=fake_server)
    try:
        async with served_app(
            redis_client=client,
            DATABASE_URL=sqlite_url,
            APIKEY_CACHE_BACKEND="redis",
            APIKEY_CACHE_REDIS_KEY_PREFIX=key_prefix,
        ) as app:
            yield app
    finally:
        await client.aclose()


def _well_formed_body(draw: st.DrawFn) -> str:
    key_id = draw(st.text(alphabet=ALPHABET, min_size=ID_LENGTH, max_size=ID_LENGTH))
    secret = draw(st.text(alphabet=ALPHABET, min_size=SECRET_LENGTH, max_size=SECRET_LENGTH))
    return f"{TYPE_PREFIX}{key_id}_{secret}"


@st.composite
def almost_valid_keys(draw: st.DrawFn) -> bytes:
    """A well-formed key with one character changed: the checksum no longer matches."""
    body = _well_formed_body(draw)
    key = body + checksum(body)
    position = draw(st.integers(0, len(key) - 1))
    replacement = draw(st.sampled_from(ALPHABET + "_-. ").filter(lambda c: c != key[position]))
    return (key[:position] + replacement + key[position + 1 :]).encode("ascii")


@st.composite
def unknown_well_formed_keys(draw: st.DrawFn) -> bytes:
    body = _well_formed_body(draw)
    return (body + checksum(body)).encode("ascii")


@st.composite
def near_miss_framings(draw: st.DrawFn) -> bytes:
    """A valid-looking key with padding, a scheme word or a case change around it."""
    key = draw(unknown_well_formed_keys()).decode("ascii")
    framed = draw(
        st.sampled_from(
            [f" {key}", f"{key} ", f"Bearer {key}", key.upper(), key + key[-1], key[:-1]]
        )
    )
    return framed.encode("ascii")


HEADER_VALUES = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda text: text.encode("utf-8")),
    st.text(st.characters(max_codepoint=31), max_size=64).map(lambda t: t.encode("latin-1")),
    st.integers(100_000, 102_400).map(lambda size: b"k" * size),
    st.builds(lambda tail: b"game_" * 20_000 + tail, st.binary(max_size=16)),
    almost_valid_keys(),
    near_miss_framings(),
    unknown_well_formed_keys(),
)


def _is_well_formed(raw: bytes) -> bool:
    try:
        # How the app reads the header: latin-1, optional whitespace around it trimmed.
        parse_api_key(raw.strip(b" \t").decode("latin-1"))
    except MalformedApiKey:
        return False
    return True


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    values=st.lists(HEADER_VALUES, min_size=1, max_size=3),
    path=st.sampled_from(["/v1/me", "/v1/keys"]),
)
async def test_hostile_api_key_headers_are_401_and_malformed_ones_cost_no_io(
    served: ServedApp, values: list[bytes], path: str
) -> None:
    cache_calls = served.cache.calls.total()
    repository_calls = served.repository.calls.total()
    headers = [(HEADER, value) for value in values]

    response = await served.client.get(path, headers=headers)

    assert response.status_code in ACCEPTABLE, response.text
    if response.status_code == 401:
        assert response.json() == {"detail": "invalid or missing API key"}
    if not any(_is_well_formed(value) for value in values):
        assert served.cache.calls.total() == cache_calls
        assert served.repository.calls.total() == repository_calls


async def test_a_repeated_key_header_is_refused_as_ambiguous(served: ServedApp) -> None:
    """Two API-key headers, even with one valid: 400, and neither value is looked up."""
    admin = served.admin.plaintext.encode("ascii")
    cache_calls = served.cache.calls.total()
    repository_calls = served.repository.calls.total()
    for values in ([admin, b"garbage"], [b"garbage", admin], [admin, admin]):
        response = await served.client.get("/v1/me", headers=[(HEADER, v) for v in values])
        assert response.status_code == 400
        assert response.json() == {"detail": "send the X-API-Key header exactly once"}
        assert served.admin.plaintext not in response.text
    assert served.cache.calls.total() == cache_calls
    assert served.repository.calls.total() == repository_calls


def admin_route_cases(schema: schemathesis.BaseSchema) -> st.SearchStrategy[Any]:
    """Cases for every operation under ``/v1/keys`` (the admin routes)."""
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        if result.ok().path.startswith("/v1/keys"):
            operations.append(result.ok())
    return st.one_of([operation.as_strategy() for operation in operations])


@pytest.fixture
async def victims(served: ServedApp) -> list[CreatedKey]:
    """Real keys whose prefixes the admin routes can revoke and rotate."""
    return [await served.service.create(f"victim-{n}", ["read"]) for n in range(VICTIMS)]


@pytest.fixture
def statuses_seen() -> Iterator[set[int]]:
    """Statuses over every example; a run that never got past validation proves nothing."""
    seen: set[int] = set()
    yield seen
    assert seen & {200, 201}, f"schemathesis never reached a route: {sorted(seen)}"


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
async def test_schemathesis_admin_routes_never_answer_5xx(
    served: ServedApp, victims: list[CreatedKey], statuses_seen: set[int], data: st.DataObject
) -> None:
    schema = schemathesis.openapi.from_dict(served.app.openapi())
    case = data.draw(admin_route_cases(schema), label="case")
    if "prefix" in (case.path_parameters or {}) and data.draw(st.booleans(), label="real"):
        victim = data.draw(st.sampled_from(victims), label="victim")
        case.path_parameters = {"prefix": victim.record.prefix}
    kwargs = case.as_transport_kwargs(base_url="http://api", headers=served.auth())
    request = served.client.build_request(
        kwargs["method"],
        kwargs["url"],
        headers=kwargs.get("headers"),
        params=kwargs.get("params"),
        json=kwargs.get("json"),
        content=kwargs.get("data"),
    )

    response = await served.client.send(request)

    statuses_seen.add(response.status_code)
    assert response.status_code < 500, (case.method, case.path, response.text)
