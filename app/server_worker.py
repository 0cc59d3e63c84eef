"""The gunicorn worker: uvicorn's, with header and connection limits enforced at the protocol.

By the time an ASGI app sees a request, uvicorn has already buffered its whole header block, and
gunicorn's ``limit_request_*`` settings are not applied by the uvicorn worker. So the bounds on
what a client may make a worker hold before any request exists live here, in the HTTP protocol:

- **Header block size** (``HTTP_MAX_HEADER_BYTES``): bytes are fed to the parser in slices that
  never take the header block past the limit, so one 50 MiB header costs at most the limit in
  memory; the request is answered 431 as soon as the limit is reached without the blank line.
- **Header count** (``HTTP_MAX_HEADER_COUNT``): a complete block with more headers stops the
  parser before any request exists; 431.
- **Header deadline** (``HTTP_HEADER_TIMEOUT_SECONDS``): from the moment a connection opens, or
  the first byte of a following request arrives, the whole header block must be in within the
  deadline, else the connection is closed (with 408 if part of a request had arrived). This is
  what ends slow-header ("slowloris") connections; uvicorn itself has no such timer and only
  arms its keep-alive timer after a response.
- **Connections per worker** (``HTTP_MAX_CONNECTIONS_PER_WORKER``): a connection accepted while
  the worker already holds that many gets 503 and is closed at once, so its file descriptor is
  freed immediately rather than when it sends a request (uvicorn's ``limit_concurrency`` checks
  only after a complete header block, and counts the connection being checked, so it would let
  idle connections pile up to the descriptor limit and serve one fewer than its number).
- **Keep-alive** (``HTTP_KEEPALIVE_TIMEOUT_SECONDS``) is uvicorn's own timer, set through
  gunicorn's ``keepalive`` option, which the uvicorn worker passes on.

Why subclass the httptools protocol rather than switch to h11, which has a header-size bound
(``h11_max_incomplete_event_size``)? h11 is pure Python and several times slower per request on
this service's hot path, and it still has neither a header deadline nor a connection cap. The
subclass hooks only methods uvicorn's ``HttpToolsProtocol`` already calls (``data_received``,
the parser callbacks, ``send_400_response``), and adds nothing to a request that is within the
limits beyond a slice of ``bytes`` (no copy when it fits) and one timer per connection.

When the app leaves its edge to the server (``create_app(edge_in_server=True)``, as ``game-api
serve`` builds it), the protocol also does the per-request work of the app's two edge layers:

- it builds each request's cycle from ``app.request_cycle``, which notes the request's id,
  metrics and access line itself; that takes a copy of uvicorn's ``on_headers_complete``, the
  one place the cycle's class is named. The id is chosen there too: the client's
  ``X-Request-ID``, noted in ``on_header`` as the headers are parsed, when acceptable, else a
  new one;
- it names each request's task by the request's id (``_start_asgi_task``);
- it sends only a request that announces a body (``Content-Length`` or ``Transfer-Encoding``)
  through ``RequestLimitsMiddleware``: the header limits that layer would check again are
  enforced here already, and a ``GET`` has no body to bound.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from app.api.request_limits import RequestLimits, RequestLimitsMiddleware
from app.api.request_telemetry import (
    REQUEST_ID_HEADER,
    VALID_REQUEST_ID,
    RequestTelemetry,
    fresh_request_ids,
    new_request_id,
)
from app.request_cycle import TelemetryRequestCycle, cycle_class_for
from configs import Settings


@dataclass(frozen=True)
class ConnectionLimits:
    """What one worker's HTTP protocol enforces before a request reaches the app."""

    max_header_bytes: int
    max_header_count: int
    header_timeout_seconds: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.HTTP_MAX_HEADER_BYTES,
            max_header_count=settings.HTTP_MAX_HEADER_COUNT,
            header_timeout_seconds=settings.HTTP_HEADER_TIMEOUT_SECONDS,
            max_connections=settings.HTTP_MAX_CONNECTIONS_PER_WORKER,
        )


# The parent's per-request methods, called directly: ``super()`` builds a proxy and looks the
# method up through it on every call, about a thousand instructions each.
_parent_data_received = HttpToolsProtocol.data_received
_parent_on_headers_complete = HttpToolsProtocol.on_headers_complete
_parent_start_asgi_task = HttpToolsProtocol._start_asgi_task


@dataclass(frozen=True)
class EdgeInServer:
    """What the protocol does per request for an app built with ``edge_in_server=True``."""

    request_telemetry: RequestTelemetry
    request_limits: RequestLimits


class _TooManyHeaders(Exception):
    """Raised from the parser's header callback to stop parsing (httptools wraps it)."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; one instance per connection."""

    limits: ClassVar[ConnectionLimits]  # set on the subclass made by ``protocol_class_for``
    # With the edge in the server: the class every request's cycle takes (``app.request_cycle``)
    # and the body limits; ``None`` when the app has the edge's ASGI layers of its own.
    cycle_class: ClassVar[type[TelemetryRequestCycle] | None] = None
    request_limits: ClassVar[RequestLimits | None] = None
    # The app behind ``RequestLimitsMiddleware``, made on the first request with a body.
    _body_limited: ClassVar[tuple[object, ASGI3Application] | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One lazy timer per connection rather than one armed and cancelled per request: a
        # header phase only notes when it began, and the timer, when it fires (at most once per
        # deadline), closes the connection or re-arms itself for the phase now running.
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_phase_began: float | None = None
        # True from the connection's start, and again once a request's body is complete, until
        # the next header block is complete: the phase the header limits and deadline cover.
        self._awaiting_headers = True
        self._header_bytes = 0
        self._too_many_headers = False
        # Noted by ``on_header`` for the request being parsed; read and reset only when the edge
        # is in the server (``cycle_class``), else left as noted, unused: it has
        # ``Content-Length`` or ``Transfer-Encoding``, and its first ``X-Request-ID`` as sent.
        self._announces_body = False
        self._request_id_sent: bytes | None = None
        # Whether this connection's requests get tasks named by their id (``_start_asgi_task``):
        # decided once per connection rather than on every request.
        self._names_tasks = (
            self.cycle_class is not None
            and not self.config.reset_contextvars
            and self.loop.get_task_factory() is None
        )

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.logger.warning("Refused a connection: %d open.", len(self.connections) - 1)
            self._answer_and_close(503, "too many connections; try again shortly")
            return
        self._begin_header_phase()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if not self._awaiting_headers:
            _parent_data_received(self, data)
            return
        if self._header_phase_began is None:
            # The first bytes of a request after keep-alive: its header phase begins. The timer
            # is usually armed already (``_begin_header_phase`` written out: a call less).
            if self._header_deadline is None:
                self._begin_header_phase()
            else:
                self._header_phase_began = self.loop.time()
        header_bytes = self._header_bytes + len(data)
        if header_bytes <= self.limits.max_header_bytes:
            # The usual read: all of it fits in what the header block may still take.
            self._header_bytes = header_bytes
            _parent_data_received(self, data)
            return
        self._feed_in_slices(data)

    def _feed_in_slices(self, data: bytes) -> None:
        """Feed ``data`` in slices that never take the header block past its limit."""
        max_header_bytes = self.limits.max_header_bytes
        while data and self._awaiting_headers:
            if self._header_phase_began is None:
                self._begin_header_phase()
            room = max_header_bytes - self._header_bytes
            if room <= 0:
                self._answer_and_close(431, f"request headers larger than {max_header_bytes} bytes")
                return
            piece, data = data[:room], data[room:]
            self._header_bytes += len(piece)
            # May complete the header block (and start the app), or fail and close.
            _parent_data_received(self, piece)
            if self.transport.is_closing():
                return
        if data:
            # Body bytes (bounded by the ASGI middleware), or a pipelined request fed along with
            # them: at most one read's worth (256 KiB) goes to the parser unsliced.
            _parent_data_received(self, data)

    # -- parser callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        """uvicorn's, noting a header that announces a body (only such a request goes through
        the body limits, with the edge in the server) and the client's request id, at three
        comparisons per header: the cycle then needs no second pass over the headers."""
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif name == b"content-length" or name == b"transfer-encoding":
            self._announces_body = True
        elif name == REQUEST_ID_HEADER and self._request_id_sent is None:
            self._request_id_sent = value
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # Counted once the block is in rather than header by header (a Python call more per
        # header on every request): the block is already bounded by ``max_header_bytes``.
        if len(self.headers) > self.limits.max_header_count:
            self._too_many_headers = True
            raise _TooManyHeaders  # stops the parser; answered in ``send_400_response``
        self._awaiting_headers = False
        self._header_phase_began = None
        cycle_class = self.cycle_class
        if cycle_class is None:
            _parent_on_headers_complete(self)
            return
        # uvicorn's ``on_headers_complete`` (0.54.0), building the request's cycle from
        # ``cycle_class``: uvicorn names its own class inside the method, and setting the
        # class of the cycle it built afterwards would turn the cycle's attributes into a
        # plain dict (Python 3.11), which made every access to them about twice as slow. A
        # request that announces a body goes to the app through ``RequestLimitsMiddleware``;
        # the header limits it would also check are this protocol's own.
        announces_body = self._announces_body
        if announces_body:
            self._announces_body = False
        request_id_sent = self._request_id_sent
        if request_id_sent is not None:
            self._request_id_sent = None
        http_version = self.parser.get_http_version()
        method = self.parser.get_method()
        self.scope["method"] = method.decode("ascii")
        if http_version != "1.1":
            self.scope["http_version"] = http_version
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        full_path = self.root_path + path
        full_raw_path = self.root_path.encode("ascii") + raw_path
        self.scope["path"] = full_path
        self.scope["raw_path"] = full_raw_path
        self.scope["query_string"] = parsed_url.query or b""

        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency
            or len(self.tasks) >= self.limit_concurrency
        ):
            app: ASGI3Application = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        elif announces_body:
            app = self._app_with_body_limits()
        else:
            app = self.app

        # The client's ``X-Request-ID`` when acceptable (see ``client_request_id``), else a new
        # one: ``RequestTelemetry.request_id_for`` written out, a call less per request.
        if request_id_sent is None:
            try:
                request_id = fresh_request_ids.pop()
            except IndexError:
                request_id = new_request_id()
        elif VALID_REQUEST_ID.fullmatch(request_id_sent):
            request_id = request_id_sent.decode("ascii")
        else:
            request_id = new_request_id()

        existing_cycle = self.cycle
        self.cycle = cycle = cycle_class(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and self.parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        cycle.request_id = request_id
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(cycle, app)
        else:
            # Pipelined: queued until the response before it is complete.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        """uvicorn's (0.54.0), with the request's task named by the request's id when the edge
        is in the server: a task dump (``asyncio.all_tasks()``, a debugger) then shows which
        request each task serves. Python 3.11 formats a ``Task-N`` name for every task made
        without one; the request already has its id, so naming it saves that (about 0.5 µs a
        task here). ``loop.create_task`` takes a name only to set it after that formatting, so
        the task is made directly, unless a task factory was installed when the connection
        opened or uvicorn's ``reset_contextvars`` asks for a fresh context: then uvicorn's own
        method."""
        if not self._names_tasks:
            _parent_start_asgi_task(self, cycle, app)
            return
        request_id: str = cycle.request_id  # type: ignore[attr-defined]  # a cycle of ours
        task = asyncio.Task(cycle.run_asgi(app), loop=self.loop, name=request_id)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def on_message_complete(self) -> None:
        # The next header block's phase begins; then uvicorn's, written out (a call less).
        self._awaiting_headers = True
        self._header_bytes = 0
        if (
            self.parser.should_upgrade() and self._should_upgrade()
        ) or self.cycle.response_complete:
            return
        self.cycle.more_body = False
        self.cycle.message_event.set()

    def _app_with_body_limits(self) -> ASGI3Application:
        """The app behind ``RequestLimitsMiddleware``, made once per worker."""
        protocol_class = type(self)
        made = protocol_class._body_limited
        if made is None or made[0] is not self.app:
            if self.request_limits is None:
                raise RuntimeError("the edge is in the server but no request limits were bound")
            # Starlette's and uvicorn's ASGI types differ only in how they spell a message.
            limited: ASGI3Application = RequestLimitsMiddleware(self.app, self.request_limits)  # type: ignore[assignment]
            made = (self.app, limited)
            protocol_class._body_limited = made
        return made[1]

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers every parser error with 400; a header past the count gets 431."""
        if self._too_many_headers:
            self._answer_and_close(431, f"more than {self.limits.max_header_count} request headers")
        else:
            super().send_400_response(msg)

    # -- the header deadline ------------------------------------------------------------------

    def _begin_header_phase(self) -> None:
        """The deadline for this header block starts now; make sure a timer will look at it."""
        began = self.loop.time()
        self._header_phase_began = began
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_at(
                began + self.limits.header_timeout_seconds, self._header_deadline_passed
            )

    def _cancel_header_deadline(self) -> None:
        self._header_phase_began = None
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        began = self._header_phase_began
        if began is None or self.transport.is_closing():
            return  # no header block under way: the next one arms a timer
        deadline = began + self.limits.header_timeout_seconds
        if self.loop.time() < deadline:
            # A later header block than the one this timer was armed for: wait for its end.
            self._header_deadline = self.loop.call_at(deadline, self._header_deadline_passed)
            return
        self._header_phase_began = None
        if self._header_bytes:  # part of a request's header block arrived
            self._answer_and_close(408, "request headers not received in time")
        else:
            self.transport.close()  # nothing was asked: nothing to answer

    # -- answers the app never sees -----------------------------------------------------------

    def _answer_and_close(self, status: int, detail: str) -> None:
        """A JSON ``{"detail"}`` answer, like the app's own errors, then close."""
        self._cancel_header_deadline()
        body = json.dumps({"detail": detail}).encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


def protocol_class_for(
    limits: ConnectionLimits, edge: EdgeInServer | None = None
) -> type[LimitedHttpToolsProtocol]:
    """The protocol class with ``limits`` bound, and the edge's per-request work when given:
    uvicorn builds protocols from a class and its own ``Config``, which has no place for
    settings of ours."""

    class ConfiguredHttpToolsProtocol(LimitedHttpToolsProtocol):
        pass

    ConfiguredHttpToolsProtocol.limits = limits
    if edge is not None:
        ConfiguredHttpToolsProtocol.cycle_class = cycle_class_for(edge.request_telemetry)
        ConfiguredHttpToolsProtocol.request_limits = edge.request_limits
    return ConfiguredHttpToolsProtocol


def edge_in_server_of(app: object, settings: Settings) -> EdgeInServer | None:
    """The edge's per-request work for ``app`` when it leaves it to the server
    (``create_app(edge_in_server=True)``, as ``game-api serve`` builds it), else ``None``."""
    state = getattr(app, "state", None)
    if not getattr(state, "edge_in_server", False):
        return None
    request_telemetry = getattr(state, "request_telemetry", None)
    if not isinstance(request_telemetry, RequestTelemetry):
        raise TypeError("an app that leaves its edge to the server must hold its telemetry")
    return EdgeInServer(request_telemetry, RequestLimits.from_settings(settings.model_dump()))


class GameApiUvicornWorker(UvicornWorker):  # type: ignore[misc]  # no type hints shipped
    """``uvicorn_worker.UvicornWorker`` serving with ``LimitedHttpToolsProtocol``, no banner.

    gunicorn builds the worker in the forked child with the application object, whose
    ``settings`` carry the limits; uvicorn's ``Config`` is only loaded when serving starts, so
    replacing its protocol class here takes effect.

    Responses carry no ``server: uvicorn`` header: naming the software (to a scanner looking
    for a version with a known hole) tells a client nothing it needs, and every response
    header is validated and written in Python by uvicorn, so a trivial response pays for each
    one (about as much as its ``x-request-id``). ``date`` stays: RFC 9110 asks it of an
    origin server with a clock.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = getattr(self.app, "settings", None)
        if not isinstance(settings, Settings):
            raise TypeError("GameApiUvicornWorker needs an application with a `settings` Settings")
        self._settings = settings
        self._limits = ConnectionLimits.from_settings(settings)
        self.config.http = protocol_class_for(self._limits)
        self.config.server_header = False

    def load_wsgi(self) -> None:
        """Load the app, then bind the edge's per-request work into the protocol when the app
        leaves it to the server."""
        super().load_wsgi()
        edge = edge_in_server_of(self.wsgi, self._settings)
        if edge is not None:
            self.config.http = protocol_class_for(self._limits, edge)

    def run(self) -> None:
        """Serve on the listening sockets themselves rather than gunicorn's wrappers of them.

        uvloop's ``create_server(sock=...)`` takes over a plain ``socket.socket`` (closing the
        server detaches it, so uvicorn's own ``sock.close()`` at shutdown is a no-op), but over
        gunicorn's wrapper it closes the descriptor behind the wrapper's back: uvicorn's
        ``sock.close()`` then hit a closed descriptor and gunicorn logged "Error while closing
        socket [Errno 9] Bad file descriptor" for every worker at every stop.
        """
        listeners: list[Any] = getattr(self, "sockets")  # noqa: B009  # set by gunicorn
        self.sockets = [getattr(listener, "sock", listener) for listener in listeners]
        super().run()
