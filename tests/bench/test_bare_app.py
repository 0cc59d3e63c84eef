"""The bare FastAPI app the benchmark measures our ``/healthz`` against answers the same body
through a route of the same signature, and has no middleware of its own."""

from __future__ import annotations

import inspect

import httpx

from app.api.health import livez
from bench.bare_app import app
from bench.bare_app import livez as bare_livez


async def test_bare_healthz_answers_like_ours() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bare") as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert inspect.signature(bare_livez) == inspect.signature(livez)


def test_bare_app_has_no_middleware_of_its_own() -> None:
    assert app.user_middleware == []
