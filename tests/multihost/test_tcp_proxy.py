"""The fault-injecting proxy itself, against a tiny echo server: a partition test is only as
trustworthy as the partition it injects. Fast (loopback only, well under a second each)."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import free_port
from tests.support.tcp_proxy import ProxyState, ThreadedTcpProxy

# How long a test waits to see that nothing arrives over a hung link. A broken proxy that
# forwards anyway answers within microseconds on loopback, so a short window catches it.
QUIET_WINDOW = 0.3
ANSWER_TIMEOUT = 5.0


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        try:
            while data := self.request.recv(4096):
                with server.lock:
                    server.received += len(data)
                self.request.sendall(data)
        except ConnectionError:
            pass  # the proxy cut the link (reset): what the cut tests do; nothing to echo


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.lock = threading.Lock()
        self.received = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[ThreadedTcpProxy]:
    with ThreadedTcpProxy("127.0.0.1", echo.port, name="echo") as started:
        yield started


def connect(proxy: ThreadedTcpProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=ANSWER_TIMEOUT)
    sock.settimeout(ANSWER_TIMEOUT)
    return sock


def echo_round(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


def is_reset(sock: socket.socket) -> bool:
    """True when the connection was reset (RST); a timeout is a failure, not a reset."""
    try:
        sock.sendall(b"ping")
        return sock.recv(16) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def new_connection_is_reset(proxy: ThreadedTcpProxy) -> bool:
    """A new connection reset by the proxy; the RST can beat ``connect()`` itself."""
    try:
        sock = connect(proxy)
    except ConnectionResetError:
        return True
    with sock:
        return is_reset(sock)


def stays_silent(sock: socket.socket) -> bool:
    sock.settimeout(QUIET_WINDOW)
    try:
        sock.recv(16)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(ANSWER_TIMEOUT)
    return False


def test_forwards_both_ways(proxy: ThreadedTcpProxy) -> None:
    with connect(proxy) as sock:
        assert echo_round(sock, b"hello" * 1000) == b"hello" * 1000
    assert proxy.state is ProxyState.FORWARDING


def test_cut_resets_open_connections_and_each_new_one(proxy: ThreadedTcpProxy) -> None:
    with connect(proxy) as before:
        assert echo_round(before, b"a") == b"a"
        proxy.cut()
        assert proxy.open_connections == 0
        assert is_reset(before)
    assert new_connection_is_reset(proxy)


def test_heal_after_cut_forwards_again_on_the_same_port(proxy: ThreadedTcpProxy) -> None:
    port = proxy.port
    proxy.cut()
    proxy.heal()
    assert proxy.port == port
    with connect(proxy) as sock:
        assert echo_round(sock, b"back") == b"back"


def test_hang_holds_bytes_on_open_and_new_connections_until_heal(
    proxy: ThreadedTcpProxy, echo: EchoServer
) -> None:
    with connect(proxy) as open_before, connect(proxy) as idle_before:
        assert echo_round(open_before, b"x") == b"x"
        proxy.hang()
        with connect(proxy) as opened_during:  # the handshake with the proxy still succeeds
            received_before = echo.received
            for sock, payload in (
                (open_before, b"held-1"),
                (idle_before, b"held-2"),
                (opened_during, b"held-3"),
            ):
                sock.sendall(payload)
            assert stays_silent(open_before)
            assert stays_silent(opened_during)
            assert echo.received == received_before  # nothing reached the far side either
            assert proxy.open_connections == 3  # and nothing was closed

            proxy.heal()
            # Held, not lost: each connection gets its echo once the link flows again.
            for sock, payload in (
                (open_before, b"held-1"),
                (idle_before, b"held-2"),
                (opened_during, b"held-3"),
            ):
                received = b""
                while len(received) < len(payload):
                    received += sock.recv(16)
                assert received == payload


def test_cut_while_hung_resets_the_stalled_connections(proxy: ThreadedTcpProxy) -> None:
    with connect(proxy) as sock:
        assert echo_round(sock, b"x") == b"x"
        proxy.hang()
        sock.sendall(b"stalled")
        proxy.cut()
        assert is_reset(sock)


def test_controls_from_many_threads_leave_a_working_proxy(proxy: ThreadedTcpProxy) -> None:
    def flap() -> None:
        for _ in range(20):
            proxy.hang()
            proxy.cut()
            proxy.heal()

    threads = [threading.Thread(target=flap) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    proxy.heal()
    with connect(proxy) as sock:
        assert echo_round(sock, b"steady") == b"steady"


def test_close_stops_listening_and_ends_its_thread(echo: EchoServer) -> None:
    proxy = ThreadedTcpProxy("127.0.0.1", echo.port, name="closing").start()
    with connect(proxy) as sock:
        assert echo_round(sock, b"x") == b"x"
        proxy.close()
        assert is_reset(sock)
    proxy.close()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=ANSWER_TIMEOUT).close()
    assert not any(t.name == "tcp-proxy-closing" for t in threading.enumerate())
    with pytest.raises(RuntimeError):
        proxy.hang()


def test_an_unreachable_target_resets_the_client(echo: EchoServer) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead_port = placeholder.getsockname()[1]  # bound, never listening: refused
        with ThreadedTcpProxy("127.0.0.1", dead_port, name="dead") as proxy:
            assert new_connection_is_reset(proxy)


def test_free_ports_lie_below_the_range_outgoing_connections_draw_from() -> None:
    """A proxy is stopped and started again on its port; a port from the outgoing range could
    be taken in between by any client connection's local end."""
    first_outgoing = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}

    assert all(port < first_outgoing for port in ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # free when handed out
