"""Instructions, cache misses and branch mispredictions per request of ``/healthz`` as served.

``python -m bench.served_cost [--few 320] [--many 3520] [--connections 16] [--only bare|ours]``

``bench.instruction_cost`` counts ``bench.edge_cost``'s requests: one process, one request at a
time, no sockets. A served request is more than that: a gunicorn worker, real sockets, and many
connections interleaved on one event loop, so the code of several requests at different stages
shares the CPU's caches. This serves ``/healthz`` from ``game-api serve --workers 1`` (memory
backend, ``LOG_LEVEL=WARNING`` as the benchmarks run it) and from the bare app (``bench.bare_app``
under gunicorn's stock uvicorn worker) under ``valgrind --tool=callgrind --cache-sim=yes
--branch-sim=yes``, sends exactly N requests over C keep-alive connections, stops the server and
reads the worker's totals. Each server runs twice, with few requests and with many; the difference
divided by the difference in requests is one request's cost (start-up, imports and shutdown cancel
out). ``PYTHONHASHSEED=0`` keeps dict layouts, hence the counts, the same from run to run.

Per request it reports the instructions (``Ir``), the first-level cache misses for instructions
and data (``I1mr``, ``D1mr``, ``D1mw``) and the mispredicted conditional and indirect branches
(``Bcm``, ``Bim``) of callgrind's model of this machine's caches and predictor, each with the bare
app's figure over ours. Why: ``/healthz`` served costs more, relative to the bare app, than its
instruction count says, and the misses are where the rest goes. The last line weighs them into one
rough figure (an instruction 1, a first-level miss 10, a misprediction 15: orders of magnitude of
what each costs a current x86 core, not a measured time). Takes about ten minutes; needs
``valgrind`` (installed from the distribution's packages by ``bench/ensure_tool.sh`` when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.servers import bare_app_command, children_of, server_settings
from bench.system_tools import ToolUnavailable, ensure_command
from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent
EVENTS = ("Ir", "I1mr", "D1mr", "D1mw", "Bcm", "Bim")
"""The events reported, of those ``--cache-sim=yes --branch-sim=yes`` records."""
WEIGHTS = {"Ir": 1, "I1mr": 10, "D1mr": 10, "D1mw": 10, "Bcm": 15, "Bim": 15}
SUBJECTS = ("bare", "ours")
STARTUP_TIMEOUT_SECONDS = 600.0  # importing the app under valgrind takes a minute or two
STOP_TIMEOUT_SECONDS = 120.0


class ServedCostError(Exception):
    """valgrind is missing, a server did not start, or its profile could not be read."""


def ensure_valgrind() -> str:
    """The path of ``valgrind``, installed from the distribution first when it is missing."""
    try:
        return ensure_command("valgrind", "valgrind")
    except ToolUnavailable as exc:
        raise ServedCostError(str(exc)) from None


def read_totals(profile_text: str) -> dict[str, int]:
    """The whole run's count of each event in a callgrind output file's ``events``/``summary``
    lines (``totals`` in older files)."""
    names: list[str] | None = None
    values: list[int] | None = None
    for line in profile_text.splitlines():
        key, _, rest = line.partition(":")
        if key == "events":
            names = rest.split()
        elif key in ("summary", "totals"):
            values = [int(value) for value in rest.split()]
    if names is None or values is None:
        raise ServedCostError("not a callgrind profile: no events or summary line")
    # Trailing zero counts may be left out of the summary line.
    return dict(zip(names, values + [0] * (len(names) - len(values)), strict=True))


def per_request(few: dict[str, int], many: dict[str, int], requests: int) -> dict[str, float]:
    """Each event's count for one request: the longer run's extra over its extra requests."""
    return {event: (many[event] - few[event]) / requests for event in EVENTS}


def weighted(costs: dict[str, float]) -> float:
    """One rough figure from the events, by ``WEIGHTS``."""
    return sum(WEIGHTS[event] * costs[event] for event in EVENTS)


async def _one_connection(port: int, requests: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    try:
        for _ in range(requests):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                raise ServedCostError(f"unexpected answer: {head[:40]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
    finally:
        writer.close()


def send_requests(port: int, requests: int, connections: int) -> None:
    """Exactly ``requests`` GETs of ``/healthz``, spread evenly over ``connections`` kept alive."""
    if requests % connections:
        raise ValueError("requests must be a multiple of connections")

    async def all_connections() -> None:
        each = requests // connections
        await asyncio.gather(*(_one_connection(port, each) for _ in range(connections)))

    asyncio.run(all_connections())


@dataclass(frozen=True)
class Run:
    """One server under callgrind: which, how many requests, where its profiles go."""

    subject: str
    requests: int
    connections: int
    directory: Path

    def command(self, port: int) -> list[str]:
        if self.subject == "bare":
            # The worker's heartbeat is slow under valgrind: gunicorn's 30 s would kill it.
            return bare_app_command(port, 1, "--timeout", "600")
        game_api = Path(sys.executable).with_name("game-api")
        return [str(game_api), "serve", "--workers", "1", "--port", str(port)]

    def environment(self) -> dict[str, str]:
        environment = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)}
        if self.subject == "ours":
            database = self.directory / f"ours-{self.requests}.db"
            environment.update(
                server_settings("memory", "redis://127.0.0.1:6379/0", "served-cost:")
                | {"LOG_LEVEL": "WARNING", "DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
            )
        return environment

    def measure(self) -> dict[str, int]:
        """Serve, send the requests, stop; the worker's event totals."""
        port = free_port()
        profile = self.directory / f"{self.subject}-{self.requests}"
        command = [
            ensure_valgrind(),
            "--tool=callgrind",
            "--cache-sim=yes",
            "--branch-sim=yes",
            f"--callgrind-out-file={profile}.%p",
            *self.command(port),
        ]
        log_path = self.directory / f"{self.subject}-{self.requests}.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=REPO,
                start_new_session=True,
            )
        try:
            _wait_until_healthy(server, port, log_path)
            workers = children_of(server.pid)
            if len(workers) != 1:
                raise ServedCostError(f"expected one worker, found {workers}")
            send_requests(port, self.requests, self.connections)
        finally:
            _stop(server)
        return read_totals(Path(f"{profile}.{workers[0]}").read_text())


def _wait_until_healthy(server: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    """Until ``/healthz`` answers; the one request this makes is in both runs, so it cancels."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        if server.poll() is not None:
            raise ServedCostError(f"the server exited:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ServedCostError("the server did not answer /healthz in time")
        time.sleep(0.5)


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to gunicorn's master: the worker shuts down and callgrind writes its profile."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def measure(
    subjects: Sequence[str], few: int, many: int, connections: int
) -> dict[str, dict[str, float]]:
    """Each subject's events per request. Runs one at a time: how many requests a worker reads
    in one pass of its loop changes the counts, so a run gets the machine to itself."""
    with tempfile.TemporaryDirectory(prefix="served-cost-") as directory:
        costs = {}
        for subject in subjects:
            totals = [Run(subject, n, connections, Path(directory)).measure() for n in (few, many)]
            costs[subject] = per_request(totals[0], totals[1], many - few)
        return costs


def report(costs: dict[str, dict[str, float]]) -> str:
    lines = ["Per request of /healthz, served (callgrind's cache and branch simulation):"]
    lines.append(f"  {'event':8s}" + "".join(f"{subject:>12s}" for subject in costs))
    for event in EVENTS:
        row = "".join(f"{costs[subject][event]:12,.0f}" for subject in costs)
        lines.append(f"  {event:8s}{row}")
    lines.append(f"  {'weighted':8s}" + "".join(f"{weighted(c):12,.0f}" for c in costs.values()))
    if set(costs) == set(SUBJECTS):
        bare, ours = costs["bare"], costs["ours"]
        ratios = ", ".join(f"{event} {bare[event] / ours[event]:.3f}" for event in EVENTS)
        lines.append(f"  bare app / ours: {ratios}; weighted {weighted(bare) / weighted(ours):.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.served_cost", description=__doc__)
    parser.add_argument("--few", type=int, default=320)
    parser.add_argument("--many", type=int, default=3_520)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", choices=SUBJECTS, action="append")
    args = parser.parse_args(argv)
    if not 0 < args.connections <= args.few < args.many:
        parser.error("need 0 < --connections <= --few < --many")
    if args.few % args.connections or args.many % args.connections:
        parser.error("--few and --many must be multiples of --connections")
    try:
        costs = measure(args.only or SUBJECTS, args.few, args.many, args.connections)
    except ServedCostError as exc:
        print(f"served_cost: {exc}", file=sys.stderr)
        return 1
    print(report(costs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
