"""The served request's cycle: uvicorn's, noting the request's id, metrics and access line itself.

Under ``game-api serve`` every request is noted here rather than in an ASGI layer
(``RequestTelemetryMiddleware``), because on a trivial request that layer was a measurable share
of the work: a coroutine frame of its own, a wrapped ``send`` called for every message, and the
echoed ``x-request-id`` run through uvicorn's per-header checks (two regular expressions, a
``lower()``, three comparisons) like any header an app might send. Here:

- the protocol (``app.server_worker``) chooses the request's id as it builds the cycle: the
  client's ``X-Request-ID``, noted by its ``on_header`` as the headers are parsed, when
  acceptable, else a new one;
- ``run_asgi`` (uvicorn's, with the noting added) sets the id in ``log_setup.REQUEST_ID`` for
  the request's task, and writes the access event when the app is done;
- ``send`` is uvicorn's, with two additions to the head: the request is counted in the metrics
  before a byte is written, and the id's header line, made only of ``[A-Za-z0-9._-]`` (see
  ``client_request_id``), is written without being checked again;
- and one change to when bytes go out: the head of a response of known length is held until its
  body and written with it. uvicorn writes the head and the body separately, and an asyncio
  transport sends each write at once: two system calls and two TCP segments for every answer,
  where one of each does (the kernel's share of a small request is a quarter of its CPU time
  here). A chunked (streamed) response's head is written at once, as uvicorn writes it, so a
  stream's first bytes never wait for its first chunk; a head whose body never comes (the app
  fails or returns after it) is written before the connection closes, as uvicorn would have
  written it.

Everything else (``receive``, ``100 Continue``, keep-alive, waiting for a paused transport, the
errors for messages out of order) is uvicorn's own code. ``tests/edge/test_request_cycle.py``
checks that what is written here is byte for byte uvicorn's plus the one line, for the cases
uvicorn's code tells apart; the copies follow uvicorn 0.54.0, the version the lock pins.

The protocol builds each request's cycle from this class, in its copy of uvicorn's
``on_headers_complete``. ``send`` stays a coroutine, as uvicorn's: a plain function handing back
a future already done was tried, and served a request about 0.2 µs slower (``bench.edge_cost``).
"""

from __future__ import annotations

import time
from typing import ClassVar

from starlette.types import Scope
from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from app.api.authentication import AUTH_OUTCOME_SCOPE_KEY, CALLER_SCOPE_KEY
from app.api.request_telemetry import REQUEST_ID_HEADER, RequestTelemetry
from app.api.telemetry import MAX_PENDING
from app.core.log_setup import REQUEST_ID

_parent_send = RequestResponseCycle.send
_clock = time.perf_counter
_REQUEST_ID_PREFIX = REQUEST_ID_HEADER + b": "
_JOINED_BODY_LIMIT = 16 * 1024
"""A held head is joined to a body up to this size; a larger body is not copied for it (one
more write costs less than copying it)."""


class TelemetryRequestCycle(RequestResponseCycle):
    """One request's cycle, noting it in ``request_telemetry`` (bound by ``cycle_class_for``)."""

    request_telemetry: ClassVar[RequestTelemetry]
    # Slots rather than the instance's dict: uvicorn's ``__init__`` fills the dict, and these,
    # set on every request after it, cost a fifth of a microsecond or more each there.
    __slots__ = ("held_head", "request_id", "started", "status")
    # Set by whoever builds the cycle (the protocol: the client's id or a new one).
    request_id: str
    # Set by ``run_asgi`` before the app runs.
    started: float
    status: int
    # A response head written with its body (see the module docstring); empty when none is held.
    held_head: bytes

    async def run_asgi(self, app: ASGI3Application) -> None:
        """uvicorn's ``run_asgi``, with the request's id, its access event and the status of a
        request that never started its response."""
        self.started = started = _clock()
        scope: Scope = self.scope  # type: ignore[assignment]  # uvicorn's TypedDict, Starlette's Mapping
        # The request's task runs in a copy of the context made when it was created, and ends
        # with the request: nothing to reset.
        REQUEST_ID.set(self.request_id)
        self.status = 0
        self.held_head = b""
        try:
            # The ASGI interface says an app returns None; uvicorn checks that it did.
            result = await app(self.scope, self.receive, self.send)  # type: ignore[func-returns-value]
        except BaseException as exc:
            if self.status == 0:
                self.status = self.request_telemetry.note_unanswered(scope, exc, started)
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self._write_held_head()
                self.transport.close()
        else:
            if result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
                self._write_held_head()
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                self.logger.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                self.logger.error("ASGI callable returned without completing response.")
                self._write_held_head()
                self.transport.close()
        finally:
            self.on_response = _nothing
            if self.request_telemetry.access_log is not None:
                self.request_telemetry.log_request(scope, self.status, started)

    async def send(self, message: ASGISendEvent) -> None:
        """uvicorn's ``send``, counting the answer at its head and writing the id's line there.

        A head the app sends after the client left is counted, not written, as the app
        answered it. Messages out of order go to uvicorn's own ``send`` for its errors.
        """
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            if not self.response_started and message["type"] == "http.response.start":
                self._count_response(message["status"])
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                return await _parent_send(self, message)
            # uvicorn's code for ``http.response.start`` (0.54.0), plus the count and the id.
            self.response_started = True
            self.waiting_for_100_continue = False

            status_code = message["status"]
            self._count_response(status_code)
            headers = self.default_headers + list(message.get("headers", []))

            if self.access_log:
                self.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    get_client_addr(self.scope),
                    self.scope["method"],
                    get_path_with_query_string(self.scope),
                    self.scope["http_version"],
                    status_code,
                )

            content = [STATUS_LINE[status_code]]
            has_connection_close = False

            for name, value in headers:
                if HEADER_RE.search(name):
                    raise RuntimeError("Invalid HTTP header name.")
                if HEADER_VALUE_RE.search(value):
                    raise RuntimeError("Invalid HTTP header value.")

                name = name.lower()
                if name == b"content-length" and self.chunked_encoding is None:
                    self.expected_content_length = int(value.decode())
                    self.chunked_encoding = False
                elif name == b"transfer-encoding" and value.lower() == b"chunked":
                    self.expected_content_length = 0
                    self.chunked_encoding = True
                elif name == b"connection":
                    connection = [token.lower().strip() for token in value.split(b",")]
                    if b"close" in connection:
                        self.keep_alive = False
                        has_connection_close = True
                content.extend([name, b": ", value, b"\r\n"])

            # Only [A-Za-z0-9._-] (see ``client_request_id``): nothing for uvicorn's checks to find.
            content.extend((_REQUEST_ID_PREFIX, self.request_id.encode("ascii"), b"\r\n"))

            if not self.keep_alive and not has_connection_close:
                content.append(b"connection: close\r\n")

            if (
                self.chunked_encoding is None
                and self.scope["method"] != "HEAD"
                and status_code not in (204, 304)
            ):
                # Neither content-length nor transfer-encoding specified
                self.chunked_encoding = True
                content.append(b"transfer-encoding: chunked\r\n")

            content.append(b"\r\n")
            if self.chunked_encoding:
                self.transport.write(b"".join(content))
            else:
                self.held_head = b"".join(content)  # written with the body
            return
        if self.response_complete or message["type"] != "http.response.body":
            return await _parent_send(self, message)
        # uvicorn's code for ``http.response.body`` (0.54.0), writing a held head with the body.
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        head = self.held_head  # held only when the response is not chunked

        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            self._write_held_head()  # no body follows a HEAD's head
        elif self.chunked_encoding:
            content = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more_body:
                content.append(b"0\r\n\r\n")
            self.transport.write(b"".join(content))
        else:
            num_bytes = len(body)
            if num_bytes > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= num_bytes
            if not head:
                self.transport.write(body)
            else:
                self.held_head = b""
                if num_bytes > _JOINED_BODY_LIMIT:
                    self.transport.write(head)
                    self.transport.write(body)
                else:
                    self.transport.write(head + body)

        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _write_held_head(self) -> None:
        """Write a held head whose body will not come, as uvicorn wrote it before closing."""
        head = self.held_head
        if head:
            self.held_head = b""
            if not self.disconnected:
                self.transport.write(head)

    def _count_response(self, status: int) -> None:
        """Note the answer's status; counted once, before a byte of it is written."""
        if self.status != 0:
            return  # a 500 written after a cancellation, counted as 499
        self.status = status
        metrics = self.request_telemetry.metrics
        if metrics is not None:
            # ``Telemetry.observe_request`` written out: a call less per request.
            scope: Scope = self.scope  # type: ignore[assignment]
            pending = metrics.pending_requests
            pending.append(
                (
                    scope.get("route"),
                    scope["method"],
                    status,
                    _clock() - self.started,
                    "valid" if CALLER_SCOPE_KEY in scope else scope.get(AUTH_OUTCOME_SCOPE_KEY),
                )
            )
            if metrics.flush_timer is None or len(pending) >= MAX_PENDING:
                metrics.after_note()


def _nothing() -> None:
    """What a finished cycle calls on a late response (uvicorn's ``lambda: None``)."""


def cycle_class_for(request_telemetry: RequestTelemetry) -> type[TelemetryRequestCycle]:
    """The cycle class with ``request_telemetry`` bound, one per worker."""

    class ConfiguredRequestCycle(TelemetryRequestCycle):
        pass

    ConfiguredRequestCycle.request_telemetry = request_telemetry
    return ConfiguredRequestCycle
