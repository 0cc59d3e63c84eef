"""Bounded requests at the ASGI edge: 413 for a body over the limit, 431 for oversized headers.

FastAPI reads and parses a whole body before any dependency (the API-key check included) runs,
so without a bound an anonymous ``POST`` can make a worker buffer hundreds of megabytes. This
middleware sits outside routing and authentication and decides from the headers alone:

- ``Content-Length`` over ``HTTP_MAX_BODY_BYTES``: 413 at once, without reading a byte of body.
- a body of unannounced length (``Transfer-Encoding: chunked``): the bytes are counted as the
  app pulls them from ``receive``; the chunk that crosses the limit is answered with 413 and
  nothing more is read, so the rest is never buffered.
- too many headers, or a header block over ``HTTP_MAX_HEADER_BYTES``: 431. The HTTP protocol of
  our gunicorn worker (``app.server_worker``) already refuses those before the headers are
  buffered; this is the second line for any other server running the app.

Every refusal carries ``Connection: close``: the client is mid-way through sending something we
will not read, and parsing the rest only to throw it away would be work done for an attacker.

A request without a body (a ``GET``) costs one pass over its header list and no extra wrapping;
a body of announced, acceptable length is not wrapped either (the server never delivers more
than ``Content-Length`` bytes). Under ``game-api serve`` the app is built without this layer and
the worker's protocol puts it in front of the app only for a request that announces a body
(``Content-Length`` or ``Transfer-Encoding``): a ``GET`` does not pass here at all.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What a header costs on the wire beyond its name and value: ": " and CRLF.
HEADER_LINE_OVERHEAD = 4


@dataclass(frozen=True)
class RequestLimits:
    """The bounds the middleware enforces (``HTTP_MAX_*`` settings)."""

    max_body_bytes: int
    max_header_bytes: int
    max_header_count: int

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> RequestLimits:
        """From the settings as plain values (``container.config()``, ``model_dump()``)."""
        return cls(
            max_body_bytes=int(values["HTTP_MAX_BODY_BYTES"]),
            max_header_bytes=int(values["HTTP_MAX_HEADER_BYTES"]),
            max_header_count=int(values["HTTP_MAX_HEADER_COUNT"]),
        )


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once the 413 is sent, to unwind the app that was reading."""


@dataclass(frozen=True)
class _Refusal:
    """A canned answer; its messages are built afresh for each send (ASGI messages are
    mutable dicts that an inner layer or the server may change)."""

    status: int
    body: bytes

    @classmethod
    def of(cls, status: int, detail: str) -> _Refusal:
        return cls(status, json.dumps({"detail": detail}).encode())

    async def send_to(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self.body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


class RequestLimitsMiddleware:
    """Pure ASGI (no ``BaseHTTPMiddleware``): it must see ``receive`` before anyone reads it."""

    def __init__(self, app: ASGIApp, limits: RequestLimits) -> None:
        self._app = app
        self._limits = limits
        self._body_too_large = _Refusal.of(
            413, f"request body larger than {limits.max_body_bytes} bytes"
        )
        self._too_many_headers = _Refusal.of(
            431, f"more than {limits.max_header_count} request headers"
        )
        self._header_block_too_large = _Refusal.of(
            431, f"request headers larger than {limits.max_header_bytes} bytes"
        )

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function handing back the awaitable it chose: every request passes here, and
        # a coroutine of its own would be one more level for each to create and step through.
        if scope["type"] != "http":
            return self._app(scope, receive, send)
        limits = self._limits
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if len(headers) > limits.max_header_count:
            return self._too_many_headers.send_to(send)

        header_bytes = 0
        content_length: bytes | None = None
        has_transfer_encoding = False
        for name, value in headers:
            header_bytes += len(name) + len(value) + HEADER_LINE_OVERHEAD
            if name == b"content-length":
                content_length = value
            elif name == b"transfer-encoding":
                has_transfer_encoding = True
        if header_bytes > limits.max_header_bytes:
            return self._header_block_too_large.send_to(send)

        if content_length is not None and not has_transfer_encoding:
            # The HTTP parser has already refused a malformed length; a value we cannot read
            # is left to it and to the app rather than guessed at here.
            if content_length.isdigit() and int(content_length) > limits.max_body_bytes:
                return self._body_too_large.send_to(send)
            return self._app(scope, receive, send)
        if has_transfer_encoding:
            return self._call_counting_body(scope, receive, send)
        # HTTP/1.1: neither header means no body at all.
        return self._app(scope, receive, send)

    async def _call_counting_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a ``receive`` that stops at ``max_body_bytes``.

        The 413 is sent from inside ``receive`` at the moment the limit is crossed, because the
        app may turn any error from ``receive`` into a response of its own (FastAPI answers 400
        for "an error parsing the body"); after that the app's own response is dropped.
        """
        max_body_bytes = self._limits.max_body_bytes
        received = 0
        app_started_response = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body_bytes:
                    refused = True
                    if app_started_response:
                        # Too late for a 413: end the stream as if the client had gone.
                        return {"type": "http.disconnect"}
                    await self._body_too_large.send_to(send)
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal app_started_response
            if refused and not app_started_response:
                return  # the 413 is the answer; whatever the app made of the cut is dropped
            if message["type"] == "http.response.start":
                app_started_response = True
            await send(message)

        try:
            await self._app(scope, counting_receive, guarded_send)
        except Exception:
            # Anything the app raised after the 413 went out is a consequence of cutting the
            # body; re-raising would make the server try to answer a second time.
            if not (refused and not app_started_response):
                raise
