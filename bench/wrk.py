"""Driving ``wrk`` (a load generator in C, from the distribution's packages) and reading it back.

A Python load loop would be the bottleneck long before a two-worker server is; wrk is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.system_tools import ToolUnavailable, ensure_command

BENCH_DIR = Path(__file__).resolve().parent
SCRIPT = BENCH_DIR / "wrk_report.lua"
MIN_WORKER_SHARE = 0.35
"""A run counts only if every worker holds at least this share of its connections."""

Spread = Callable[[], dict[int, int]]


class LoadGeneratorError(Exception):
    """wrk is missing or a run went wrong (errors, non-2xx answers)."""


def ensure_wrk() -> str:
    """The path of ``wrk``, installing it from the distribution first when it is missing."""
    try:
        return ensure_command("wrk", "wrk")
    except ToolUnavailable as exc:
        raise LoadGeneratorError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    connections_per_worker: tuple[int, ...] = ()
    attempts: int = 1

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "rps": self.rps,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "connections_per_worker": list(self.connections_per_worker),
            "attempts": self.attempts,
        }


def parse(output: str, *, split: dict[int, int] | None = None, attempts: int = 1) -> LoadResult:
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            return LoadResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                non_2xx=int(data["non_2xx"]),
                socket_errors=int(data["socket_errors"]),
                p50_ms=data["p50_us"] / 1_000,
                p90_ms=data["p90_us"] / 1_000,
                p99_ms=data["p99_us"] / 1_000,
                max_ms=data["max_us"] / 1_000,
                connections_per_worker=tuple(sorted((split or {}).values(), reverse=True)),
                attempts=attempts,
            )
    raise LoadGeneratorError(f"no summary in wrk's output: {output[-500:]!r}")


def balanced(split: dict[int, int], minimum_share: float = MIN_WORKER_SHARE) -> bool:
    """Whether every worker holds at least ``minimum_share`` of the connections (or unknown)."""
    total = sum(split.values())
    return not total or min(split.values()) >= minimum_share * total


def _observe_split(
    spread: Spread, connections: int, process: subprocess.Popen[str]
) -> dict[int, int]:
    """The connections per worker once wrk has opened them all (or after a second)."""
    deadline = time.monotonic() + 1.0
    split = spread()
    while sum(split.values()) < connections and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.02)
        split = spread()
    return split


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int = 32,
    threads: int = 1,
    api_key: str | None = None,
    spread: Spread | None = None,
    attempts: int = 8,
) -> LoadResult:
    """One wrk run; refuses results with errors or non-2xx answers rather than report them.

    With ``spread`` (connections per worker, see ``bench.servers.connections_per_worker``) a run
    whose connections landed lopsidedly on the workers is stopped and started again, up to
    ``attempts`` times: otherwise one run measures two workers and the next effectively one.
    """
    env = {name: value for name, value in os.environ.items() if name != "BENCH_API_KEY"}
    if api_key is not None:
        env["BENCH_API_KEY"] = api_key
    command = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(SCRIPT),
        url,
    ]
    for attempt in range(1, attempts + 1):
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        split: dict[int, int] = {}
        if spread is not None:
            split = _observe_split(spread, connections, process)
            if attempt < attempts and not balanced(split):
                process.terminate()
                process.communicate(timeout=30)
                continue
        try:
            stdout, stderr = process.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise LoadGeneratorError(f"wrk on {url} did not finish") from None
        if process.returncode != 0:
            raise LoadGeneratorError(f"wrk failed: {stderr.strip()[-500:]}")
        result = parse(stdout, split=split, attempts=attempt)
        if result.non_2xx or result.socket_errors or not result.requests:
            raise LoadGeneratorError(
                f"wrk on {url}: {result.non_2xx} non-2xx answers, {result.socket_errors} "
                f"socket errors, {result.requests} requests"
            )
        return result
    raise AssertionError("unreachable: the last attempt always returns")
