"""A loopback TCP proxy, running in a thread of its own, that a synchronous test can cut, hang
and heal while a server process talks through it: a network partition on demand.

Usage::

    with ThreadedTcpProxy("127.0.0.1", redis_port) as proxy:   # listens on proxy.port
        server = LiveServer({"REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0", ...})
        proxy.hang()    # packets stop: open connections stall, new ones connect and stall
        proxy.cut()     # the peer is gone: every connection is reset, new ones are reset too
        proxy.heal()    # bytes flow again (stalled bytes are delivered, as TCP would)

Why a thread with its own event loop: the servers under test are other processes and the test
driving them is synchronous, so the proxy must keep forwarding while the test thread blocks on
an HTTP call. Each control returns only once it has taken effect in the proxy's loop (all open
connections reset by ``cut``, no further byte forwarded after ``hang``), so a test can apply a
fault and then act knowing the fault is in place.

``cut`` keeps the listening socket and resets every accepted connection (SO_LINGER 0, so the
peer sees ECONNRESET rather than a polite EOF): the port stays ours, so ``heal`` can never
lose it to another process, and a client fails fast, as against a host that answers with RST.
``hang`` is the nastier fault, a silent partition: nothing is refused, nothing arrives, and only
the client's own timeouts can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from tests.support.redis_server import free_port

_CHUNK = 65536
_CONTROL_TIMEOUT = 10.0

T = TypeVar("T")


class ProxyState(enum.Enum):
    FORWARDING = "forwarding"
    HUNG = "hung"
    CUT = "cut"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST: SO_LINGER (on, 0 s) makes the kernel drop the connection at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ThreadedTcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; every public method is thread-safe."""

    def __init__(self, target_host: str, target_port: int, *, name: str = "proxy") -> None:
        self.target = (target_host, target_port)
        self.name = name
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"tcp-proxy-{name}", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._state = ProxyState.FORWARDING
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._lock = threading.Lock()
        self.accepted = 0  # connections accepted since start, for tests and diagnostics

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ThreadedTcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def close(self) -> None:
        """Reset every connection, stop listening and end the thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=_CONTROL_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> ThreadedTcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- controls -------------------------------------------------------------------------------

    @property
    def state(self) -> ProxyState:
        return self._state

    @property
    def open_connections(self) -> int:
        """Client connections currently held open by the proxy."""

        async def count() -> int:
            return len(self._tasks)

        return self._call(count())

    def cut(self) -> None:
        """Reset every open connection (RST) and reset each new one as soon as it is accepted."""
        self._call(self._set_state(ProxyState.CUT))

    def hang(self) -> None:
        """Stop forwarding in both directions, on open and new connections; close nothing."""
        self._call(self._set_state(ProxyState.HUNG))

    def heal(self) -> None:
        """Forward again; bytes held while hung are delivered."""
        self._call(self._set_state(ProxyState.FORWARDING))

    # -- the loop's side ------------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if not self._thread.is_alive() or self._loop.is_closed():
            coroutine.close()
            raise RuntimeError(f"proxy {self.name} is not running")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=_CONTROL_TIMEOUT)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._drop_all()

    async def _set_state(self, state: ProxyState) -> None:
        assert self._flowing is not None
        self._state = state
        if state is ProxyState.FORWARDING:
            self._flowing.set()
        else:
            self._flowing.clear()
        if state is ProxyState.CUT:
            await self._drop_all()

    async def _drop_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _is_cut(self) -> bool:
        return self._state is ProxyState.CUT

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The stream server's handler: ``_forward``, ending quietly when ``close`` cancels it
        (Python 3.11's stream server reports a cancelled handler as an error in a callback)."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._forward(reader, writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._state is ProxyState.CUT:
            _reset(writer)
            return
        task = asyncio.current_task()
        assert task is not None and self._flowing is not None
        self._tasks.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            # A hung link completes no handshake with the far side either.
            await self._flowing.wait()
            try:
                upstream_reader, upstream = await asyncio.open_connection(*self.target)
            except OSError:
                _reset(writer)
                return
            self._writers.add(upstream)
            pipes = {
                asyncio.create_task(self._pipe(reader, upstream)),
                asyncio.create_task(self._pipe(upstream_reader, writer)),
            }
            try:
                while pipes:
                    done, pipes = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                    if not all(each.result() for each in done):
                        break  # a reset on one side: the other side is of no use any more
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            for each in (writer, upstream):
                if each is not None:
                    self._writers.discard(each)
                    if self._is_cut():  # the state may have changed while we forwarded
                        _reset(each)
                    else:
                        each.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Copy until EOF, then pass the EOF on (a half-close, as TCP would); each chunk waits
        for the link to flow both before it is read and before it is written. False when a
        side failed (reset) rather than ended."""
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            return False
        return True
