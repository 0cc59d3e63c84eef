"""Driving ``wrk`` (a load generator in C, from the distribution's packages) and reading it back.

A Python load loop would be the bottleneck long before a two-worker server is; wrk is not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
SCRIPT = BENCH_DIR / "wrk_report.lua"
ENSURE_WRK = BENCH_DIR / "ensure_wrk.sh"


class LoadGeneratorError(Exception):
    """wrk is missing or a run went wrong (errors, non-2xx answers)."""


def ensure_wrk() -> str:
    """The path of ``wrk``, installing it from the distribution first when it is missing."""
    if shutil.which("wrk") is None:
        completed = subprocess.run(["sh", str(ENSURE_WRK)], capture_output=True, text=True)
        if completed.returncode != 0 or shutil.which("wrk") is None:
            raise LoadGeneratorError(f"wrk is not available: {completed.stderr.strip()}")
    path = shutil.which("wrk")
    assert path is not None
    return path


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
        }


def parse(output: str) -> LoadResult:
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
            )
    raise LoadGeneratorError(f"no summary in wrk's output: {output[-500:]!r}")


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int = 32,
    threads: int = 1,
    api_key: str | None = None,
) -> LoadResult:
    """One wrk run; refuses results with errors or non-2xx answers rather than report them."""
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
    completed = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=seconds + 60
    )
    if completed.returncode != 0:
        raise LoadGeneratorError(f"wrk failed: {completed.stderr.strip()[-500:]}")
    result = parse(completed.stdout)
    if result.non_2xx or result.socket_errors or not result.requests:
        raise LoadGeneratorError(
            f"wrk on {url}: {result.non_2xx} non-2xx answers, {result.socket_errors} socket "
            f"errors, {result.requests} requests"
        )
    return result
