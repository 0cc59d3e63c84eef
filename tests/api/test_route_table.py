"""The app's route table: flat, and the ceiling route beside the route it is the ceiling of."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import BaseRoute

from tests.api.conftest import ApiFactory


def _app_of(api: object) -> FastAPI:
    app: FastAPI = api.client._transport.app  # type: ignore[attr-defined]
    return app


def _paths(routes: list[BaseRoute]) -> list[str]:
    return [getattr(route, "path", "") for route in routes]


async def test_every_route_is_on_the_app_itself(make_api: ApiFactory, database_url: str) -> None:
    """No router stays included as a layer that every request would walk into."""
    api = await make_api(DATABASE_URL=database_url, BENCH_ROUTES=True)
    routes = _app_of(api).routes

    assert not [route for route in routes if hasattr(route, "original_router")]
    for path in ("/healthz", "/v1/me", "/v1/keys", "/v1/audit", "/bench/me"):
        assert path in _paths(routes)


async def test_the_probes_come_first_and_the_ceiling_route_follows_v1_me(
    make_api: ApiFactory, database_url: str
) -> None:
    """Route matching is linear: a yardstick matched later than its subject would flatter it."""
    api = await make_api(DATABASE_URL=database_url, BENCH_ROUTES=True)
    paths = _paths(_app_of(api).routes)

    # Only FastAPI's own /openapi.json (which the bare app has too) precedes the probes.
    assert set(paths[1:4]) == {"/livez", "/healthz", "/readyz"}
    assert paths[0] == "/openapi.json"
    assert paths[paths.index("/v1/me") + 1] == "/bench/me"
