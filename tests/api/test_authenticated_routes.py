"""Authentication happens in the route, before FastAPI solves any dependency."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute

from app.api.authentication import AuthenticatedRoute, requires_key
from app.domain.keys import generate_api_key
from tests.api.conftest import Api


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router, kept as such by FastAPI
            yield from _api_routes(route.original_router.routes)


def _route(api: Api, path: str, method: str) -> APIRoute:
    app = api.client._transport.app  # type: ignore[attr-defined]
    for route in _api_routes(app.routes):
        if route.path == path and method in route.methods:
            return route
    raise AssertionError(f"no route {method} {path}")


@pytest.mark.parametrize(
    ("path", "method", "scope"),
    [("/v1/me", "GET", ""), ("/v1/keys", "GET", "admin"), ("/v1/keys", "POST", "admin")],
)
async def test_protected_routes_declare_their_scope_and_solve_no_auth_dependency(
    api: Api, path: str, method: str, scope: str
) -> None:
    route = _route(api, path, method)

    assert isinstance(route, AuthenticatedRoute)
    assert route.required_scope == scope
    # The key check is not among what FastAPI resolves per request.
    solved = [dependency.call for dependency in route.dependant.dependencies]
    assert all("authenticat" not in getattr(call, "__qualname__", "") for call in solved)
    if path == "/v1/me":
        assert solved == []


def test_an_endpoint_without_a_declared_requirement_is_refused() -> None:
    router = APIRouter(route_class=AuthenticatedRoute)

    async def forgot_to_declare() -> dict[str, str]:
        return {}

    with pytest.raises(TypeError, match="declares neither"):
        router.add_api_route("/oops", forgot_to_declare)


def test_a_declared_endpoint_is_accepted() -> None:
    router = APIRouter(route_class=AuthenticatedRoute)

    @router.get("/fine")
    @requires_key()
    async def declared() -> dict[str, str]:
        return {}

    assert [route.path for route in router.routes] == ["/fine"]


async def test_the_docs_document_the_401_and_403_answers(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()

    me = schema["paths"]["/v1/me"]["get"]["responses"]
    keys = schema["paths"]["/v1/keys"]["post"]["responses"]
    assert "401" in me and "403" not in me
    assert {"401", "403"} <= set(keys)


async def test_a_cached_key_is_admitted_without_awaiting_authenticate(api: Api) -> None:
    """A route asks the process-local hit first; ``authenticate`` is for everything else."""
    created = await api.create_key(["read"])
    assert (await api.client.get("/v1/me", headers=api.auth(created.plaintext))).status_code == 200
    awaited: list[str] = []
    original = api.service.authenticate

    async def recording_authenticate(plaintext: str) -> Any:
        awaited.append("authenticate")
        return await original(plaintext)

    api.service.authenticate = recording_authenticate  # type: ignore[method-assign]

    again = await api.client.get("/v1/me", headers=api.auth(created.plaintext))
    unknown = await api.client.get("/v1/me", headers=api.auth(generate_api_key().plaintext))

    assert again.status_code == 200
    assert again.json()["prefix"] == created.record.prefix
    assert unknown.status_code == 401
    assert awaited == ["authenticate"]  # the unknown key's, not the cached one's
