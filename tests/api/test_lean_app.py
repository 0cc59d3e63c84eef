"""``LeanFastAPI``: FastAPI's stack without the two layers that only pass requests through here.

The app's stack must lose exactly those two and keep every other layer; a layer that would act
(native telemetry on, an app-wide body limit) must stay; and what the kept layers do (the JSON
500 of the error handler, a route's exception handling) must be unchanged.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi._body_limit import AppBodyLimitMiddleware
from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware

from app.api.errors import register_error_handlers
from app.api.lean_app import LeanFastAPI
from app.main import create_app

TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False}


def layers(app: FastAPI) -> list[str]:
    """The class names of the app's stack, outermost first, down to the router."""
    names = []
    layer: Any = app.build_middleware_stack()
    while layer is not app.router:
        names.append(type(layer).__name__)
        layer = layer.app
    return names


def test_the_apps_stack_is_fastapis_without_the_two_pass_through_layers() -> None:
    plain = FastAPI(telemetry=TELEMETRY_OFF)
    lean = LeanFastAPI(telemetry=TELEMETRY_OFF)

    dropped = {ExceptionTelemetryMiddleware.__name__, AppBodyLimitMiddleware.__name__}
    assert dropped <= set(layers(plain))  # FastAPI's own stack has both
    assert layers(lean) == [name for name in layers(plain) if name not in dropped]
    assert not dropped & set(layers(create_app(edge_in_server=True)))


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        ({"telemetry": {"tracing": False, "metrics": False}}, ExceptionTelemetryMiddleware),
        ({}, ExceptionTelemetryMiddleware),
        ({"telemetry": TELEMETRY_OFF, "max_body_size": 5}, AppBodyLimitMiddleware),
    ],
    ids=["logs left on", "telemetry by default", "an app-wide body limit"],
)
def test_a_layer_that_would_act_is_kept(options: dict[str, Any], kept: type) -> None:
    assert kept.__name__ in layers(LeanFastAPI(**options))


async def test_an_app_wide_body_limit_still_answers_413() -> None:
    app = LeanFastAPI(telemetry=TELEMETRY_OFF, max_body_size=5)

    @app.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        small = await client.post("/echo", json={})
        large = await client.post("/echo", json={"a": "more than five bytes"})

    assert small.status_code == 200
    assert large.status_code == 413


async def test_an_unhandled_error_still_gets_the_json_500_and_a_refusal_its_own_answer() -> None:
    app = LeanFastAPI(telemetry=TELEMETRY_OFF)
    register_error_handlers(app)

    @app.get("/fails")
    async def fails() -> None:
        raise RuntimeError("boom")

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
    ) as client:
        failed = await client.get("/fails")
        missing = await client.get("/nowhere")

    assert (failed.status_code, failed.json()) == (500, {"detail": "internal server error"})
    assert missing.status_code == 404 and "detail" in missing.json()
