"""CPU time per request, end to end: our ``/healthz`` under ``game-api serve`` and the bare app's.

``python -m bench.cpu_cost [--rounds 10] [--seconds 3] [--backend memory] [--redis-url URL]
[--set NAME=VALUE ...]``

Throughput on a 2-core machine mixes what the server costs with how wrk (on the same cores) and
the scheduler share the CPU. This reads the cost itself: the user and system CPU time the
workers' processes used during each wrk run (``/proc/PID/stat``), divided by the requests wrk
counted in it. Both servers run side by side (``game-api serve --workers 2`` and the bare
FastAPI app of ``bench.bare_app`` under gunicorn's stock uvicorn worker), loaded in alternating
rounds; medians over rounds, and the bare app's median over ours. ``bench.edge_cost`` measures
the same two requests in one process without sockets; the two together tell what the running
server adds around the app. ``--set`` passes a setting to our server (``METRICS_ENABLED=false``,
``APIKEY_CACHE_BACKEND`` is ``--backend``).
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from bench.backends import unique_prefix
from bench.redis_keys import delete_prefix
from bench.servers import BareAppServer, LiveServer, server_settings, wait_for_workers
from bench.wrk import run_wrk

CONNECTIONS = 32
WARMUP_SECONDS = 2.0
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> tuple[float, float]:
    """User and system CPU seconds the processes ``pids`` have used so far."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            # Fields after the command name, which may hold spaces: utime is the 12th, stime 13th.
            fields = stat.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return user / _TICKS_PER_SECOND, system / _TICKS_PER_SECOND


@dataclass
class Subject:
    """One server under load: CPU microseconds per request (user, system) and requests/s."""

    name: str
    server: LiveServer | BareAppServer
    pids: list[int] = field(default_factory=list)
    user_us: list[float] = field(default_factory=list)
    system_us: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)

    def load(self, seconds: float, *, measured: bool) -> None:
        url = f"http://127.0.0.1:{self.server.port}/healthz"
        user_before, system_before = cpu_seconds(self.pids)
        result = run_wrk(url, seconds=seconds, connections=CONNECTIONS)
        user_after, system_after = cpu_seconds(self.pids)
        if measured:
            self.user_us.append((user_after - user_before) / result.requests * 1e6)
            self.system_us.append((system_after - system_before) / result.requests * 1e6)
            self.rps.append(result.rps)

    def total_us(self) -> list[float]:
        return [user + system for user, system in zip(self.user_us, self.system_us, strict=True)]


def measure(
    rounds: int, seconds: float, backend: str, redis_url: str, settings: dict[str, str]
) -> list[Subject]:
    """Both servers up side by side, ``rounds`` alternating rounds of ``seconds`` each."""
    prefix = unique_prefix("cpu")
    ours = LiveServer(server_settings(backend, redis_url, prefix, **settings), workers=2)
    subjects = [Subject("bare app /healthz", BareAppServer(workers=2)), Subject("/healthz", ours)]
    try:
        with ExitStack() as stack:
            for subject in subjects:
                stack.enter_context(subject.server)
                subject.pids = wait_for_workers(subject.server)
            for subject in subjects:
                subject.load(WARMUP_SECONDS, measured=False)
            for _ in range(rounds):
                for subject in subjects:
                    subject.load(seconds, measured=True)
    finally:
        if backend != "memory":
            delete_prefix(redis_url, prefix)
    return subjects


def report(subjects: list[Subject]) -> str:
    lines = ["CPU per request (both workers, from /proc), medians over rounds:"]
    for subject in subjects:
        lines.append(
            f"  {subject.name:20s} {statistics.median(subject.total_us()):7.1f} µs"
            f"  (user {statistics.median(subject.user_us):.1f}, system"
            f" {statistics.median(subject.system_us):.1f})"
            f"  {statistics.median(subject.rps):9,.0f} requests/s"
            f"  per round: {', '.join(f'{value:.0f}' for value in subject.total_us())}"
        )
    bare, ours = subjects
    lines.append(
        "  bare app / ours, CPU per request: "
        f"{statistics.median(bare.total_us()) / statistics.median(ours.total_us()):.3f}; "
        f"requests/s: {statistics.median(ours.rps) / statistics.median(bare.rps):.3f}"
    )
    return "\n".join(lines)


def _setting(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--backend", default="memory")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--set", type=_setting, action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    measured = measure(args.rounds, args.seconds, args.backend, args.redis_url, dict(args.set))
    print(report(measured))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
