"""One pure ASGI middleware for what every request leaves behind: its id, its metrics, its line.

- **Request id.** A client's ``X-Request-ID`` is kept when it is 1 to 128 characters of
  ``[A-Za-z0-9._-]`` (so it can be trusted in a log line and a header), otherwise a new one is
  made: 128 random bits as 32 hex digits, like ``uuid4().hex`` without its version digit. The
  bits come from ``random`` (Mersenne Twister, reseeded from the OS in every forked worker)
  rather than ``os.urandom``: an id only has to be unique, not unguessable, and a system call
  per request was a measurable share of a trivial one.
  It is echoed on the response and set in ``log_setup.REQUEST_ID`` for the request, so every
  line logged while serving it carries ``request_id``.
- **Metrics**, counted when the response *starts*, before the client can read a byte: a client
  that got its answer and then scrapes ``/metrics`` always finds its request counted (see
  ``app.api.telemetry``).
- **One access event** per request (logger ``game_api.access``, event ``request``) when it is
  done: route template, method, status, ``duration_ms``, the caller's key prefix (never the
  key) and the authentication outcome. It has a pipeline of its own (``log_setup.
  configure_access_log``): the same format as every other line, without ``logging``'s cost.

A plain ASGI class rather than ``BaseHTTPMiddleware``, which would run every request through
an extra task and memory streams: here a request costs a header scan, one wrapped ``send`` and
the few calls above. ``ACCESS_LOG=false`` and ``METRICS_ENABLED=false`` switch the two halves off
(the request id stays: it costs little and other lines use it).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.authentication import AUTH_OUTCOME_SCOPE_KEY, CALLER_SCOPE_KEY
from app.api.telemetry import Telemetry, template_of
from app.core.log_setup import REQUEST_ID, access_log

REQUEST_ID_HEADER = b"x-request-id"
CLIENT_CLOSED_REQUEST = 499
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
_random_bits = random.getrandbits
_clock = time.perf_counter


def client_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's ``X-Request-ID`` (the first one sent) when it is acceptable, else ``None``."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _VALID_REQUEST_ID.fullmatch(value) else None
    return None


def route_template(scope: Scope) -> str:
    """The matched route's path template, never the path itself (bounded label values)."""
    return template_of(scope.get("route"))


def auth_outcome(scope: Scope) -> str | None:
    """``valid`` for an authenticated caller, the refusal's reason, or ``None`` (no key needed)."""
    if CALLER_SCOPE_KEY in scope:
        return "valid"
    outcome: str | None = scope.get(AUTH_OUTCOME_SCOPE_KEY)
    return outcome


def observe(telemetry: Telemetry, scope: Scope, status: int, started: float) -> None:
    """Note the request in ``telemetry``: its route, method, status, duration and outcome."""
    telemetry.observe_request(
        scope.get("route"), scope["method"], status, _clock() - started, auth_outcome(scope)
    )


class RequestTelemetryMiddleware:
    """Request id, request metrics and the access event; see the module docstring."""

    def __init__(self, app: ASGIApp, *, telemetry: Telemetry | None, access_log_on: bool) -> None:
        self._app = app
        self._telemetry = telemetry
        self._access_log = access_log() if access_log_on else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = _clock()
        # 128 random bits as 32 hex digits; ``bytes.hex`` rather than a ``:032x`` format spec,
        # whose parsing and padding code is several times the cost of the bits themselves.
        request_id = client_request_id(scope["headers"]) or _random_bits(128).to_bytes(16).hex()
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        token = REQUEST_ID.set(request_id)
        telemetry = self._telemetry
        status = 0

        # A plain function handing back ``send``'s awaitable: called for every message, and a
        # coroutine of its own would be one more to create and step through each time.
        def send_with_telemetry(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
                if telemetry is not None:
                    # ``observe`` written out: the hot path's one call is the noting itself.
                    telemetry.observe_request(
                        scope.get("route"),
                        scope["method"],
                        status,
                        _clock() - started,
                        "valid" if CALLER_SCOPE_KEY in scope else scope.get(AUTH_OUTCOME_SCOPE_KEY),
                    )
            return send(message)

        try:
            await self._app(scope, receive, send_with_telemetry)
        except BaseException as exc:
            if status == 0:
                # Unhandled: the server's error middleware answers 500. Cancelled: the client
                # went away first, recorded as nginx's "client closed request".
                status = 500 if isinstance(exc, Exception) else CLIENT_CLOSED_REQUEST
                if telemetry is not None:
                    observe(telemetry, scope, status, started)
            raise
        finally:
            if self._access_log is not None:
                self._log(scope, status, started)
            REQUEST_ID.reset(token)

    def _log(self, scope: Scope, status: int, started: float) -> None:
        caller = scope.get(CALLER_SCOPE_KEY)
        assert self._access_log is not None
        self._access_log.event(
            route=route_template(scope),
            method=scope["method"],
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000.0, 3),
            key_prefix=getattr(caller, "prefix", None),
            auth=auth_outcome(scope),
        )
