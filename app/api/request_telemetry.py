"""What every request leaves behind: its id, its metrics, its access line; noted in one place.

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

``RequestTelemetry`` holds what both ways of noting a request share. There are two, because a
request's own layer is a measurable share of a trivial request:

- **Served by ``game-api serve``**, the server's request cycle notes it (``app.request_cycle``):
  the id's header is written with the response head, and there is no ASGI layer and no wrapped
  ``send`` at all. ``create_app(..., edge_in_server=True)`` leaves the layer out.
- **Anywhere else** (an in-process test through httpx's ``ASGITransport``, another ASGI
  server), ``RequestTelemetryMiddleware``, a plain ASGI class rather than
  ``BaseHTTPMiddleware``, which would run every request through an extra task and memory
  streams: here a request costs a header scan, one wrapped ``send`` and the few calls above.

``ACCESS_LOG=false`` and ``METRICS_ENABLED=false`` switch the two halves off (the request id
stays: it costs little and other lines use it).
"""

from __future__ import annotations

import os
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
VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
"""What a client's ``X-Request-ID`` must be (whole) to be kept."""
_clock = time.perf_counter
_IDS_PER_BATCH = 64
fresh_request_ids: list[str] = []
"""Ids made and not yet handed out; ``new_request_id`` refills it. The worker's protocol pops
from it itself as it builds a served request's cycle (``app.server_worker``) and calls
``new_request_id`` only when it is empty."""
# A worker forked with ids in hand must not hand out the same ones as its siblings.
os.register_at_fork(after_in_child=fresh_request_ids.clear)


def client_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's ``X-Request-ID`` (the first one sent) when it is acceptable, else ``None``."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if VALID_REQUEST_ID.fullmatch(value) else None
    return None


def new_request_id() -> str:
    """128 random bits as 32 hex digits, like ``uuid4().hex`` without its version digit.

    Made 64 at a time, one ``randbytes`` and one ``hex`` for all of them, and handed out with a
    ``pop``: per request, that is a fraction of making one id from its own bits.
    """
    try:
        return fresh_request_ids.pop()
    except IndexError:
        digits = random.randbytes(16 * _IDS_PER_BATCH).hex()
        fresh_request_ids.extend(
            [digits[start : start + 32] for start in range(32, len(digits), 32)]
        )
        return digits[:32]


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


class RequestTelemetry:
    """The request id's rule, the metrics and the access log, for whichever layer notes requests.

    Built once per app (``create_app``), kept as ``app.state.request_telemetry``.
    """

    __slots__ = ("access_log", "metrics")

    def __init__(self, metrics: Telemetry | None, *, access_log_on: bool) -> None:
        self.metrics = metrics
        # Resolved once: ``None`` when access events are off, by setting or by log level.
        self.access_log = access_log() if access_log_on else None

    @staticmethod
    def request_id_for(headers: list[tuple[bytes, bytes]]) -> str:
        """The client's acceptable ``X-Request-ID``, else a new one."""
        return client_request_id(headers) or new_request_id()

    def note_unanswered(self, scope: Scope, failure: BaseException, started: float) -> int:
        """The status a request that ended in ``failure`` before its response started counts as.

        Unhandled: the server answers 500. Cancelled: the client went away first (or the server
        stopped), recorded as nginx's "client closed request".
        """
        status = 500 if isinstance(failure, Exception) else CLIENT_CLOSED_REQUEST
        if self.metrics is not None:
            observe(self.metrics, scope, status, started)
        return status

    def log_request(self, scope: Scope, status: int, started: float) -> None:
        """The request's access event, when access events are on."""
        if self.access_log is None:
            return
        caller = scope.get(CALLER_SCOPE_KEY)
        self.access_log.event(
            route=route_template(scope),
            method=scope["method"],
            status=status,
            duration_ms=round((_clock() - started) * 1000.0, 3),
            key_prefix=getattr(caller, "prefix", None),
            auth=auth_outcome(scope),
        )


class RequestTelemetryMiddleware:
    """Request id, request metrics and the access event as an ASGI layer; see the docstring."""

    def __init__(self, app: ASGIApp, *, request_telemetry: RequestTelemetry) -> None:
        self._app = app
        self._request_telemetry = request_telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = _clock()
        request_telemetry = self._request_telemetry
        request_id = request_telemetry.request_id_for(scope["headers"])
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        token = REQUEST_ID.set(request_id)
        metrics = request_telemetry.metrics
        status = 0

        # A plain function handing back ``send``'s awaitable: called for every message, and a
        # coroutine of its own would be one more to create and step through each time.
        def send_with_telemetry(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
                if metrics is not None:
                    # ``observe`` written out: the hot path's one call is the noting itself.
                    metrics.observe_request(
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
                status = request_telemetry.note_unanswered(scope, exc, started)
            raise
        finally:
            request_telemetry.log_request(scope, status, started)
            REQUEST_ID.reset(token)
