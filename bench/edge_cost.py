"""Per-request cost of uvicorn's HTTP protocol and the app together, in process, layer by layer.

``python -m bench.edge_cost`` feeds raw HTTP/1.1 requests to the protocol a worker serves with
(``LimitedHttpToolsProtocol`` for our app, uvicorn's stock ``HttpToolsProtocol`` for the bare
FastAPI app of ``bench.bare_app``) through an in-memory transport, on uvloop, on ``--connections``
keep-alive connections at once: every pass of the loop reads one request per connection, runs
their tasks and then what they scheduled (the metrics and access-line flushes), as a worker under
wrk does. No sockets and no load generator share the CPU, so the figures hold still where
end-to-end throughput swings by a fifth between rounds, yet they include everything the worker's
Python does for a request, which ``bench.asgi_cost`` (the app alone, called directly) leaves out.

Subjects, in alternating rounds (minimum and median per request):

- the bare app's ``/healthz`` on the stock protocol: the yardstick; its responses carry
  uvicorn's default ``server`` header as gunicorn's stock worker sends them, ours (all of
  them) only ``date``, as ``game-api serve`` sends them;
- our ``/healthz``, ``/bench/me`` and ``/v1/me`` (memory backend, a cached key) as served: the
  app built with ``edge_in_server``, each request noted by the protocol's request cycle
  (``app.request_cycle``) and only a request with a body sent through the body limits;
  ``/bench/me`` gets ``/v1/me``'s very request, key header included, and does not read it;
- ``/healthz, ASGI edge``: the app with the edge's two ASGI layers (``RequestTelemetryMiddleware``
  and ``RequestLimitsMiddleware``) instead, as any other server would serve it: what moving
  them into the server saves;
- the same on uvicorn's stock protocol: the share of the protocol's limits;
- ``/healthz, no edge``: the app without the layers on a protocol that does not do their work
  either: the share of the request id, the metrics and the access event (with
  ``--access-log``, access lines are rendered and written to ``/dev/null`` as
  ``LOG_LEVEL=INFO`` would have them; by default they are off, as in ``make bench``'s
  throughput part) and of the body limits;
- with ``--redis-url``, also ``/v1/me`` on the redis backend and its yardstick
  ``/bench/me-redis-get`` (one raw ``GET``, sent the key too): both wait for Redis, so their
  times carry its round trip, but their instruction counts (``bench.instruction_cost``) do not.

``--only`` keeps the named subjects: ``bench.instruction_cost`` runs one at a time under
callgrind.

Metrics live in memory-mapped files in a temporary directory, as under ``game-api serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from email.utils import formatdate
from typing import Any

# Before prometheus_client is imported (by the app): metric values in per-process files.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _metrics_dir = tempfile.mkdtemp(prefix="bench-edge-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
    atexit.register(shutil.rmtree, _metrics_dir, ignore_errors=True)

import uvloop
from dependency_injector import providers
from fastapi import FastAPI
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.api.authentication import AUTHENTICATION_ATTRIBUTE, RouteAuthentication
from app.api.bench_routes import BENCH_KEY_SCOPES
from app.core.container import Container, build_container
from app.core.log_setup import configure_access_log
from app.core.resources import close_container_resources
from app.main import create_app
from app.repositories.memory import InMemoryApiKeyRepository, InMemoryEventLog
from app.server_worker import ConnectionLimits, edge_in_server_of, protocol_class_for
from bench.backends import bench_settings
from bench.bare_app import app as bare_app
from configs import Settings


class Answers:
    """Counts the response heads written on all connections; ``all_in`` is set at ``expected``."""

    def __init__(self) -> None:
        self.expected = 0
        self.count = 0
        self.all_in = asyncio.Event()

    def expect(self, count: int) -> None:
        self.expected, self.count = count, 0
        self.all_in.clear()

    def answered(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.all_in.set()


class MemoryTransport(asyncio.Transport):
    """A transport that notes each response head in ``answers`` and keeps only the last
    status line."""

    def __init__(self, answers: Answers) -> None:
        super().__init__()
        self.answers = answers
        self.last_status_line = b""
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data[:5] == b"HTTP/":
            head = bytes(data)
            self.last_status_line = head[: head.find(b"\r\n")]
            self.answers.answered()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


Connection = tuple[HttpToolsProtocol, MemoryTransport]


def _connections(
    app: Any,
    protocol: type[HttpToolsProtocol],
    count: int,
    loop: asyncio.AbstractEventLoop,
    answers: Answers,
    *,
    server_header: bool,
) -> list[Connection]:
    """``count`` connections serving ``app``, each response with the headers a running server
    adds to all: ``date``, and ``server`` when ``server_header`` (uvicorn's default, which
    ``game-api serve`` turns off)."""
    config = Config(
        app,
        http=protocol,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=server_header,
    )
    config.load()
    state = ServerState()
    # As uvicorn's main loop sets them (once a second there; the date changes nothing here).
    state.default_headers = [(b"date", formatdate(usegmt=True).encode()), *config.encoded_headers]
    connections = []
    for _ in range(count):
        served = protocol(config=config, server_state=state, app_state={}, _loop=loop)
        transport = MemoryTransport(answers)
        served.connection_made(transport)
        connections.append((served, transport))
    return connections


async def _serve(
    connections: list[Connection], request: bytes, passes: int, answers: Answers
) -> None:
    """``passes`` times: one request on every connection, then until each has its answer."""
    for _ in range(passes):
        answers.expect(len(connections))
        for served, _ in connections:
            served.data_received(request)
        await answers.all_in.wait()
        await asyncio.sleep(0)  # one more pass: the flushes the answers scheduled


def _request(path: str, key: str | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1:8000", "User-Agent: wrk"]
    if key is not None:
        lines.append(f"X-API-Key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _served_service(
    loop: asyncio.AbstractEventLoop, backend: str, redis_url: str
) -> tuple[Container, str, Settings]:
    """A container for ``backend`` on in-memory keys (following their log) and one issued key."""
    settings = bench_settings(backend, redis_url, f"bench:edge:{os.getpid()}:", BENCH_ROUTES=True)
    container: Container = build_container(settings)
    repository = InMemoryApiKeyRepository()
    container.apikey_repository.override(providers.Object(repository))
    container.event_log.override(providers.Object(InMemoryEventLog(repository)))
    service = container.apikey_service()
    key = loop.run_until_complete(service.create("edge", list(BENCH_KEY_SCOPES))).plaintext
    loop.run_until_complete(service.start())  # the lease under which local hits are trusted
    return container, key, settings


def _app_over(container: Container, *, edge_in_server: bool = True) -> FastAPI:
    """``create_app`` over ``container`` as ``game-api serve`` builds it (unless told to keep
    the edge's ASGI layers), its key service resolved at once.

    An app resolves it through the wiring on its first authenticated request, and wiring is
    per module: by then another container wired for the next app would answer.
    """
    app = create_app(container=container, edge_in_server=edge_in_server)
    authentication: RouteAuthentication = getattr(app, AUTHENTICATION_ATTRIBUTE)
    authentication.resolved_service()
    return app


def measure(
    rounds: int,
    requests: int,
    connections: int,
    access_log: bool,
    *,
    redis_url: str | None = None,
    only: Sequence[str] = (),
) -> dict[str, Any]:
    configure_access_log(
        open(os.devnull, "w"),  # noqa: SIM115
        "INFO" if access_log else "WARNING",
        "json",
    )
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    container, key, settings = _served_service(loop, "memory", "redis://127.0.0.1:1/0")
    containers = [container]
    service = container.apikey_service()
    try:
        ours = _app_over(container)
        in_asgi_layer = _app_over(container, edge_in_server=False)
        connection_limits = ConnectionLimits.from_settings(settings)
        limited = protocol_class_for(connection_limits, edge_in_server_of(ours, settings))
        # The protocol without a request cycle of ours: nothing notes requests left in-server.
        limited_no_cycle = protocol_class_for(connection_limits)
        healthz = _request("/healthz")
        answers = Answers()

        def served(app: Any, protocol: type[HttpToolsProtocol]) -> list[Connection]:
            return _connections(app, protocol, connections, loop, answers, server_header=False)

        # The bare app as gunicorn's stock uvicorn worker serves it: with ``server: uvicorn``.
        stock = _connections(
            bare_app, HttpToolsProtocol, connections, loop, answers, server_header=True
        )
        subjects: dict[str, tuple[list[Connection], bytes]] = {
            "bare app /healthz": (stock, healthz),
            "/healthz": (served(ours, limited), healthz),
            "/healthz, ASGI edge": (served(in_asgi_layer, limited_no_cycle), healthz),
            "/healthz, ASGI edge, stock protocol": (
                served(in_asgi_layer, HttpToolsProtocol),
                healthz,
            ),
            "/healthz, no edge": (served(ours, limited_no_cycle), healthz),
            # A yardstick gets /v1/me's very request, key header included (unread).
            "/bench/me": (served(ours, limited), _request("/bench/me", key)),
            "/v1/me": (served(ours, limited), _request("/v1/me", key)),
        }
        if redis_url is not None:

            def on_backend(backend: str) -> tuple[list[Connection], list[Connection], str]:
                """Two sets of connections to a server of ``backend`` and its issued key."""
                container_of_backend, backend_key, _ = _served_service(loop, backend, redis_url)
                containers.append(container_of_backend)
                app_of_backend = _app_over(container_of_backend)
                protocol = protocol_class_for(
                    connection_limits, edge_in_server_of(app_of_backend, settings)
                )
                return (
                    served(app_of_backend, protocol),
                    served(app_of_backend, protocol),
                    backend_key,
                )

            on_redis, on_redis_too, redis_key = on_backend("redis")
            subjects["/v1/me (redis)"] = (on_redis, _request("/v1/me", redis_key))
            subjects["/bench/me-redis-get"] = (
                on_redis_too,
                _request("/bench/me-redis-get", redis_key),
            )
            on_tiered, _, tiered_key = on_backend("tiered")
            subjects["/v1/me (tiered)"] = (on_tiered, _request("/v1/me", tiered_key))
        unknown = set(only) - set(subjects)
        if unknown:
            raise SystemExit(
                f"no such subject: {sorted(unknown)[0]!r} (known: {', '.join(subjects)})"
            )
        if only:
            subjects = {name: subject for name, subject in subjects.items() if name in only}
        passes = max(1, requests // connections)
        costs: dict[str, list[float]] = {name: [] for name in subjects}
        for round_number in range(rounds + 1):
            for name, (subject, request) in subjects.items():
                start = time.perf_counter_ns()
                loop.run_until_complete(_serve(subject, request, passes, answers))
                if round_number:  # the first round warms up
                    costs[name].append((time.perf_counter_ns() - start) / (passes * connections))
        for name, (subject, _) in subjects.items():
            for _, transport in subject:
                if transport.last_status_line != b"HTTP/1.1 200 OK":
                    raise RuntimeError(f"{name} answered {transport.last_status_line!r}")
        hits = service.metrics.local_hits
    finally:
        for each in containers:
            each.unwire()
            loop.run_until_complete(each.apikey_service().clear_cache())  # its Redis keys
            loop.run_until_complete(close_container_resources(each))
    return {
        "min": {name: min(values) for name, values in costs.items()},
        "median": {name: statistics.median(values) for name, values in costs.items()},
        "local_hits": hits,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=1_200, help="per subject and round")
    parser.add_argument("--connections", type=int, default=12)
    parser.add_argument("--access-log", action="store_true", help="write access lines")
    parser.add_argument("--redis-url", help="also measure the redis backend on this Redis")
    parser.add_argument("--only", action="append", default=[], help="measure this subject only")
    args = parser.parse_args(argv)
    measured = measure(
        args.rounds,
        args.requests,
        args.connections,
        args.access_log,
        redis_url=args.redis_url,
        only=args.only,
    )
    lows, medians = measured["min"], measured["median"]
    bare = lows.get("bare app /healthz", math.nan)
    print(
        f"{args.rounds} rounds of {args.requests} requests on {args.connections} connections; "
        "per request: minimum and median over rounds, minimum against the bare app's"
    )
    for name in lows:
        print(
            f"  {name:38s} {lows[name] / 1000:7.2f} µs  {medians[name] / 1000:7.2f} µs  "
            f"x{lows[name] / bare:.3f}"
        )
    if "/v1/me" in lows and "/bench/me" in lows:
        print(
            f"  /v1/me costs {lows['/v1/me'] - lows['/bench/me']:+.0f} ns over the ceiling route "
            f"({measured['local_hits']} local hits)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
