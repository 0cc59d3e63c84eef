"""The served request's cycle (``app.request_cycle``) against uvicorn's own.

Every response head it writes must be uvicorn's, byte for byte, plus the ``x-request-id`` line;
each request must be counted once, with the status the client saw, and logged once with its id.
The cycles here run over an in-memory transport; the protocol test at the end feeds bytes to
the real protocol class the worker serves with, pipelined requests included.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.server import ServerState

from app.api.request_limits import RequestLimits
from app.api.request_telemetry import CLIENT_CLOSED_REQUEST, RequestTelemetry, new_request_id
from app.api.telemetry import UNMATCHED_ROUTE, Telemetry
from app.core import log_setup
from app.request_cycle import TelemetryRequestCycle, cycle_class_for
from app.server_worker import ConnectionLimits, EdgeInServer, protocol_class_for

ID_LINE = re.compile(rb"x-request-id: ([A-Za-z0-9._-]+)\r\n")
DATE_HEADER = [(b"date", b"Mon, 30 Nov 2026 07:00:00 GMT")]

Message = dict[str, Any]
App = Callable[[Any, Any, Any], Awaitable[None]]


class MemoryTransport:
    """What a cycle and the protocol use of an asyncio transport, writing to a buffer."""

    def __init__(self) -> None:
        self.written = b""
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


def http_scope(
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    http_version: str = "1.1",
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": http_version,
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": headers or [],
    }


def responding(*messages: Message) -> App:
    """An ASGI app that sends ``messages`` (fresh copies each time) and returns."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(dict(message))

    return app


def start(status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> Message:
    return {"type": "http.response.start", "status": status, "headers": headers or []}


def body(content: bytes = b"", more_body: bool = False) -> Message:
    return {"type": "http.response.body", "body": content, "more_body": more_body}


def make_cycle(
    cycle_class: type[RequestResponseCycle],
    scope: dict[str, Any],
    *,
    keep_alive: bool = True,
    request_id: str | None = None,
) -> tuple[RequestResponseCycle, MemoryTransport]:
    transport = MemoryTransport()
    cycle = cycle_class(
        scope=scope,  # type: ignore[arg-type]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("uvicorn.error"),
        access_logger=logging.getLogger("uvicorn.access"),
        access_log=False,
        default_headers=list(DATE_HEADER),
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )
    if isinstance(cycle, TelemetryRequestCycle):
        cycle.request_id = request_id or new_request_id()  # as the protocol chooses it
    return cycle, transport


def telemetry_cycle_class() -> tuple[type[TelemetryRequestCycle], Telemetry]:
    metrics = Telemetry()
    return cycle_class_for(RequestTelemetry(metrics, access_log_on=True)), metrics


def requests_counted(metrics: Telemetry, status: int, method: str = "GET") -> float:
    metrics.flush()
    value = metrics.registry.get_sample_value(
        "game_api_requests_total",
        {"route": UNMATCHED_ROUTE, "method": method, "status": str(status)},
    )
    return value or 0.0


def without_id_line(written: bytes) -> tuple[bytes, list[bytes]]:
    """``written`` without its ``x-request-id`` lines, and the ids they carried."""
    return ID_LINE.sub(b"", written), ID_LINE.findall(written)


# What uvicorn's code tells apart when it writes a head: a declared length, none (chunked is
# added), a chunked body of the app's own, HEAD, 204 and 304, ``connection: close`` from the
# app or from an HTTP/1.0 client, and header names in upper case.
RESPONSES = {
    "content-length": ("GET", True, [start(200, [(b"content-length", b"2")]), body(b"ok")]),
    "no length": ("GET", True, [start(200), body(b"ab", more_body=True), body(b"c")]),
    "app chunked": (
        "GET",
        True,
        [start(200, [(b"transfer-encoding", b"chunked")]), body(b"abc")],
    ),
    "HEAD": ("HEAD", True, [start(200, [(b"content-length", b"5")]), body()]),
    "204": ("GET", True, [start(204), body()]),
    "304": ("GET", True, [start(304), body()]),
    "app closes": (
        "GET",
        True,
        [start(200, [(b"Connection", b"Keep-Alive, Close"), (b"content-length", b"0")]), body()],
    ),
    "client is HTTP/1.0": ("GET", False, [start(200, [(b"content-length", b"1")]), body(b"x")]),
    "upper-case names": (
        "GET",
        True,
        [start(418, [(b"Content-Length", b"1"), (b"X-Thing", b"a b")]), body(b"x")],
    ),
    # A head whose body never comes: uvicorn wrote it before closing, so must we.
    "no body after the head": ("GET", True, [start(200, [(b"content-length", b"2")])]),
    "a body longer than declared": (
        "GET",
        True,
        [start(200, [(b"content-length", b"1")]), body(b"xy")],
    ),
    "a body shorter than declared": (
        "GET",
        True,
        [start(200, [(b"content-length", b"3")]), body(b"xy")],
    ),
    "a body in parts": (
        "GET",
        True,
        [start(200, [(b"content-length", b"3")]), body(b"xy", more_body=True), body(b"z")],
    ),
}


@pytest.mark.parametrize("case", RESPONSES)
async def test_heads_are_uvicorns_plus_the_request_id_line(case: str) -> None:
    method, keep_alive, messages = RESPONSES[case]
    theirs, their_transport = make_cycle(
        RequestResponseCycle, http_scope(method), keep_alive=keep_alive
    )
    cycle_class, metrics = telemetry_cycle_class()
    ours, our_transport = make_cycle(cycle_class, http_scope(method), keep_alive=keep_alive)

    await theirs.run_asgi(responding(*messages))
    await ours.run_asgi(responding(*messages))

    stripped, ids = without_id_line(our_transport.written)
    assert stripped == their_transport.written
    assert len(ids) == 1 and re.fullmatch(rb"[0-9a-f]{32}", ids[0])
    head = our_transport.written.split(b"\r\n\r\n", 1)[0]
    assert b"x-request-id: " + ids[0] in head
    assert our_transport.closed == their_transport.closed
    assert requests_counted(metrics, messages[0]["status"], method) == 1


async def test_an_app_failing_after_its_head_leaves_the_head_written_as_uvicorn_does() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(200, [(b"content-length", b"2")]))
        raise ValueError("boom")

    theirs, their_transport = make_cycle(RequestResponseCycle, http_scope())
    cycle_class, metrics = telemetry_cycle_class()
    ours, our_transport = make_cycle(cycle_class, http_scope())

    await theirs.run_asgi(app)
    await ours.run_asgi(app)

    assert their_transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert without_id_line(our_transport.written)[0] == their_transport.written
    assert our_transport.closed and their_transport.closed
    assert requests_counted(metrics, 200) == 1


async def test_a_response_of_declared_length_goes_out_in_one_write() -> None:
    """One system call and one TCP segment per answer, where uvicorn's code makes two."""
    messages = [start(200, [(b"content-length", b"2")]), body(b"ok")]
    theirs, their_transport = make_cycle(RequestResponseCycle, http_scope())
    cycle_class, _ = telemetry_cycle_class()
    ours, our_transport = make_cycle(cycle_class, http_scope())

    await theirs.run_asgi(responding(*messages))
    await ours.run_asgi(responding(*messages))

    assert len(their_transport.writes) == 2
    assert our_transport.writes == [our_transport.written]
    assert our_transport.written.endswith(b"\r\n\r\nok")


async def test_a_large_body_is_written_after_its_head_not_copied_into_one_write() -> None:
    payload = b"x" * (64 * 1024)
    messages = [start(200, [(b"content-length", str(len(payload)).encode())]), body(payload)]
    cycle_class, _ = telemetry_cycle_class()
    cycle, transport = make_cycle(cycle_class, http_scope())

    await cycle.run_asgi(responding(*messages))

    head, written_body = transport.writes
    assert head.endswith(b"\r\n\r\n") and head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert written_body == payload


async def test_a_streamed_response_has_its_head_written_before_its_first_chunk() -> None:
    """A response without a declared length may wait long for its first chunk (a stream of
    events): its head must not wait with it."""
    head_sent = asyncio.Event()
    send_chunk = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(200))
        head_sent.set()
        await send_chunk.wait()
        await send(body(b"event"))

    cycle_class, _ = telemetry_cycle_class()
    cycle, transport = make_cycle(cycle_class, http_scope())
    task = asyncio.create_task(cycle.run_asgi(app))
    await head_sent.wait()

    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.written.endswith(b"transfer-encoding: chunked\r\n\r\n")
    send_chunk.set()
    await task
    assert transport.written.endswith(b"5\r\nevent\r\n0\r\n\r\n")


async def test_a_header_uvicorn_refuses_is_refused_the_same_way() -> None:
    bad_value = [start(200, [(b"x-thing", b"line\r\nbreak"), (b"content-length", b"0")]), body()]
    theirs, their_transport = make_cycle(RequestResponseCycle, http_scope())
    cycle_class, _ = telemetry_cycle_class()
    ours, our_transport = make_cycle(cycle_class, http_scope())

    await theirs.run_asgi(responding(*bad_value))
    await ours.run_asgi(responding(*bad_value))

    assert their_transport.written == b"" and their_transport.closed
    assert our_transport.written == b"" and our_transport.closed


async def test_an_app_that_raises_before_answering_is_counted_once_as_the_500_sent() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    cycle_class, metrics = telemetry_cycle_class()
    cycle, transport = make_cycle(cycle_class, http_scope())

    await cycle.run_asgi(app)

    assert transport.written.startswith(b"HTTP/1.1 500 ")
    assert len(without_id_line(transport.written)[1]) == 1
    assert requests_counted(metrics, 500) == 1


async def test_a_request_cancelled_before_answering_counts_as_client_closed() -> None:
    entered = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        entered.set()
        await asyncio.Event().wait()

    cycle_class, metrics = telemetry_cycle_class()
    cycle, transport = make_cycle(cycle_class, http_scope())
    task = asyncio.create_task(cycle.run_asgi(app))
    await entered.wait()
    task.cancel()
    await task  # uvicorn's handling: logged, and a 500 written if the client is still there

    assert requests_counted(metrics, CLIENT_CLOSED_REQUEST) == 1
    assert requests_counted(metrics, 500) == 0
    assert transport.written.startswith(b"HTTP/1.1 500 ")


async def test_a_head_waits_for_a_paused_transport_and_keeps_its_id_line() -> None:
    sending = asyncio.Event()
    respond = responding(start(200, [(b"content-length", b"2")]), body(b"ok"))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        sending.set()  # the app runs on into its first send, which waits for the drain
        await respond(scope, receive, send)

    cycle_class, metrics = telemetry_cycle_class()
    cycle, transport = make_cycle(cycle_class, http_scope())
    cycle.flow.pause_writing()
    task = asyncio.create_task(cycle.run_asgi(app))
    await sending.wait()
    assert transport.written == b"" and not task.done()

    cycle.flow.resume_writing()
    await task

    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(without_id_line(transport.written)[1]) == 1
    assert transport.written.endswith(b"\r\n\r\nok")
    assert requests_counted(metrics, 200) == 1


async def test_a_client_gone_before_the_head_is_still_counted_and_nothing_is_written() -> None:
    cycle_class, metrics = telemetry_cycle_class()
    cycle, transport = make_cycle(cycle_class, http_scope())
    cycle.disconnected = True

    await cycle.run_asgi(responding(start(200, [(b"content-length", b"0")]), body()))

    assert transport.written == b""
    assert requests_counted(metrics, 200) == 1


LIMITS = ConnectionLimits(
    max_header_bytes=8192, max_header_count=50, header_timeout_seconds=5, max_connections=10
)
MAX_BODY_BYTES = 64


def edge_protocol(metrics: Telemetry | None = None) -> type[Any]:
    """The protocol class ``game-api serve`` uses for an app built with ``edge_in_server``."""
    request_limits = RequestLimits(
        max_body_bytes=MAX_BODY_BYTES, max_header_bytes=8192, max_header_count=50
    )
    edge = EdgeInServer(RequestTelemetry(metrics, access_log_on=False), request_limits)
    return protocol_class_for(LIMITS, edge)


async def exchange(protocol_class: type[Any], app: App, data: bytes) -> MemoryTransport:
    """Feed ``data`` to one connection of ``protocol_class`` serving ``app``; what it wrote once
    every request it started (pipelined ones included) is done."""
    config = Config(app=app, http=protocol_class, lifespan="off", proxy_headers=False)
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = MemoryTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(data)
    async with asyncio.timeout(10):
        while protocol.tasks:  # a pipelined request's task starts when the one before ends
            await asyncio.wait(set(protocol.tasks))
    protocol.connection_lost(None)
    return transport


def describing_app() -> App:
    """Answers with the request as the server put it in the scope, and the body it read."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received = b""
        while True:
            message = await receive()
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        described = repr(
            [scope[name] for name in ("method", "http_version", "path", "raw_path")]
            + [scope["query_string"], scope["root_path"], received]
        ).encode()
        await send(start(200, [(b"content-length", str(len(described)).encode())]))
        await send(body(described))

    return app


async def test_the_worker_protocol_gives_pipelined_requests_each_their_own_id() -> None:
    """Bytes in, bytes out through the protocol class ``game-api serve`` uses: two requests in
    one read, the second queued by uvicorn until the first is answered."""
    metrics = Telemetry()
    transport = await exchange(
        edge_protocol(metrics),
        responding(start(200, [(b"content-length", b"2")]), body(b"ok")),
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Request-ID: first\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: x\r\nX-Request-ID: second\r\n\r\n",
    )

    assert without_id_line(transport.written)[1] == [b"first", b"second"]
    assert requests_counted(metrics, 200) == 2


async def test_the_worker_protocol_keeps_a_valid_client_id_and_replaces_any_other() -> None:
    """The id each request gets from the protocol, as the app's log lines see it and as the
    response carries it: one connection, four requests in turn."""
    seen_by_app: list[str | None] = []
    task_names: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen_by_app.append(log_setup.REQUEST_ID.get())
        task = asyncio.current_task()
        assert task is not None
        task_names.append(task.get_name())
        await send(start(200, [(b"content-length", b"0")]))
        await send(body())

    transport = await exchange(
        edge_protocol(),
        app,
        b"GET /kept HTTP/1.1\r\nHost: x\r\nX-Request-ID: abc.1\r\n\r\n"
        b"GET /none HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /bad HTTP/1.1\r\nHost: x\r\nX-Request-ID: bad id\r\n\r\n"
        b"GET /twice HTTP/1.1\r\nX-Request-ID: one\r\nHost: x\r\nX-Request-ID: two\r\n\r\n",
    )

    kept, fresh, replaced, first_of_two = without_id_line(transport.written)[1]
    assert (kept, first_of_two) == (b"abc.1", b"one")
    # A new id for a request that sent none, though the one before it did; and for a bad one.
    assert re.fullmatch(rb"[0-9a-f]{32}", fresh) and re.fullmatch(rb"[0-9a-f]{32}", replaced)
    assert seen_by_app == [each.decode() for each in (kept, fresh, replaced, first_of_two)]
    assert task_names == seen_by_app, "each request's task is named by its id"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /a%20b/%C3%A9?x=1&y=%20 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /plain HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET /kept HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
        b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=[
        "escaped path and query",
        "HTTP/1.0",
        "HTTP/1.0 keep-alive",
        "HEAD, close",
        "a body",
        "a chunked body",
        "a body, then a GET",
    ],
)
async def test_the_request_reaches_the_app_as_uvicorns_own_protocol_puts_it(
    request_bytes: bytes,
) -> None:
    ours = await exchange(edge_protocol(), describing_app(), request_bytes)
    theirs = await exchange(protocol_class_for(LIMITS), describing_app(), request_bytes)

    stripped, ids = without_id_line(ours.written)
    assert len(ids) == request_bytes.count(b" HTTP/1.")
    assert stripped == theirs.written


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"40\r\n" + b"a" * 64 + b"\r\n1\r\nb\r\n0\r\n\r\n",
    ],
    ids=["declared", "chunked"],
)
async def test_a_body_over_the_limit_gets_413_from_the_worker_counted_and_with_its_id(
    request_bytes: bytes,
) -> None:
    """The app leaves body limits to the worker (``edge_in_server``): the protocol sends a
    request that announces a body through ``RequestLimitsMiddleware``, inside the noting."""
    metrics = Telemetry()
    reached_app = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached_app
        reached_app = True
        await describing_app()(scope, receive, send)

    transport = await exchange(edge_protocol(metrics), app, request_bytes)

    head, _, answer = transport.written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head.lower()
    assert len(without_id_line(transport.written)[1]) == 1
    assert str(MAX_BODY_BYTES).encode() in answer
    assert requests_counted(metrics, 413, "POST") == 1
    assert transport.closed
    if b"chunked" not in request_bytes:
        assert not reached_app  # refused from the headers alone


def test_the_copied_uvicorn_code_is_of_the_uvicorn_in_the_lock() -> None:
    """``app/request_cycle.py`` and ``app/server_worker.py`` carry copies of uvicorn 0.54.0's
    ``on_headers_complete``, ``on_header``, ``on_message_complete``, ``_start_asgi_task``,
    ``run_asgi`` and ``send``.
    An upgrade must compare them with the new version's before this is changed."""
    assert uvicorn.__version__ == "0.54.0"
