"""The ASGI request-limits middleware, in process: 413 before the app reads, 431, pass-through.

The inner app records what it was given, so each test shows both the answer and what reached
(or did not reach) the layers behind the middleware.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from app.api.request_limits import RequestLimits, RequestLimitsMiddleware
from app.core.container import Container
from app.main import create_app
from configs import ConfigError, load_settings
from tests.support.containers import make_container

LIMITS = RequestLimits(max_body_bytes=1_000, max_header_bytes=2_048, max_header_count=20)


class RecordingApp:
    """Reads the whole body (as FastAPI does before any dependency); answers 200 with its size."""

    def __init__(self) -> None:
        self.called = False
        self.body_bytes_read = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        self.body_bytes_read = 0
        more_body = True
        while more_body:
            message: Message = await receive()
            if message["type"] != "http.request":
                break
            self.body_bytes_read += len(message.get("body", b""))
            more_body = message.get("more_body", False)
        body = str(self.body_bytes_read).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def client_for(app: RecordingApp) -> httpx.AsyncClient:
    middleware = RequestLimitsMiddleware(app, LIMITS)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url="http://t")


async def chunks(count: int, size: int, sent: list[int]) -> AsyncIterator[bytes]:
    for _ in range(count):
        sent.append(size)
        yield b"x" * size


async def test_announced_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    app = RecordingApp()
    async with client_for(app) as client:
        response = await client.post("/v1/keys", content=b"x" * 1_001)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 1000 bytes"}
    assert response.headers["connection"] == "close"
    assert not app.called


async def test_streamed_body_is_cut_at_the_limit_with_413() -> None:
    app = RecordingApp()
    sent: list[int] = []
    async with client_for(app) as client:
        response = await client.post("/v1/keys", content=chunks(100, 300, sent))
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 1000 bytes"}
    # The app saw the chunks up to the limit, never the one that crossed it or any after.
    assert app.body_bytes_read == 900
    assert sum(sent) < 100 * 300


async def test_bodies_within_the_limit_pass_through_whole() -> None:
    app = RecordingApp()
    async with client_for(app) as client:
        announced = await client.post("/v1/keys", content=b"x" * 1_000)
        streamed = await client.post("/v1/keys", content=chunks(4, 250, []))
        no_body = await client.get("/healthz")
    assert (announced.status_code, announced.text) == (200, "1000")
    assert (streamed.status_code, streamed.text) == (200, "1000")
    assert (no_body.status_code, no_body.text) == (200, "0")


async def test_too_many_headers_or_too_large_a_header_block_get_431() -> None:
    app = RecordingApp()
    async with client_for(app) as client:
        many = await client.get("/healthz", headers={f"x-h{i}": "v" for i in range(30)})
        large = await client.get("/healthz", headers={"x-big": "v" * 3_000})
    assert many.status_code == 431
    assert many.json() == {"detail": "more than 20 request headers"}
    assert large.status_code == 431
    assert large.json() == {"detail": "request headers larger than 2048 bytes"}
    assert not app.called


async def test_the_app_refuses_a_large_body_before_authentication(
    containers: list[Container],
) -> None:
    """Through ``create_app``: a body over the default 64 KiB is 413 from its announced length
    before anything else; a streamed one is refused by authentication before any of it is read
    without a key, and 413 as it crosses the limit with one."""
    container = make_container(containers)
    app = create_app(container=container)
    admin = (await container.apikey_service().create("admin", ["admin"])).plaintext
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        announced = await client.post("/v1/keys", content=b"{" * 70_000)
        streamed = await client.post("/v1/keys", content=chunks(20, 8_192, []))
        streamed_with_key = await client.post(
            "/v1/keys", content=chunks(20, 8_192, []), headers={"X-API-Key": admin}
        )
        small = await client.post("/v1/keys", json={"name": "n", "scopes": ["read"]})
    assert announced.status_code == 413
    assert streamed.status_code == 401
    assert streamed_with_key.status_code == 413
    assert small.status_code == 401  # within the limit, the request goes on to authentication


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HTTP_MAX_BODY_BYTES", "0"),
        ("HTTP_MAX_HEADER_BYTES", "100"),
        ("HTTP_MAX_HEADER_COUNT", "0"),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "0"),
        ("HTTP_KEEPALIVE_TIMEOUT_SECONDS", "100000"),
        ("HTTP_MAX_CONNECTIONS_PER_WORKER", "0"),
    ],
)
def test_limits_out_of_range_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()
