"""Instructions per request for ``bench.edge_cost``'s subjects, counted by callgrind.

``python -m bench.instruction_cost [--redis-url URL] [--only SUBJECT ...]``

Times on a shared 2-core machine move by a tenth between runs, so a change worth a percent or two
cannot be seen in them. The number of machine instructions the worker's Python executes for a
request does not depend on what else the machine is doing: ``valgrind --tool=callgrind`` counts
them. Each subject is served twice under callgrind by ``bench.edge_cost --only``, with few
requests and with many, and the difference divided by the difference in requests is what one
request costs (start-up, imports and warm-up cancel out). ``PYTHONHASHSEED=0`` keeps dict and set
layouts, hence the counts, the same from run to run: repeated counts agree within about 0.2 %.

An instruction count is not a time: memory stalls and branch misses are not in it, and Redis's
own work (a separate process) is not counted at all. Use it to compare two versions of the code,
or a route with its yardstick, side by side; read time from ``bench.edge_cost`` and ``make
bench``. Needs ``valgrind`` (a few minutes per subject; subjects run in parallel, one per core).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

FEW_REQUESTS = 120
MANY_REQUESTS = 1_320
PAIRS = (
    ("/healthz", "bare app /healthz"),
    ("/v1/me", "/bench/me"),
    ("/v1/me (redis)", "/bench/me-redis-get"),
    ("/v1/me (tiered)", "/bench/me"),
)
"""Each route with its yardstick: the ratio of their counts is printed."""
MEMORY_SUBJECTS = (
    "bare app /healthz",
    "/healthz",
    "/healthz, ASGI edge",
    "/healthz, no edge",
    "/bench/me",
    "/v1/me",
)
REDIS_SUBJECTS = ("/v1/me (redis)", "/bench/me-redis-get", "/v1/me (tiered)")
_COLLECTED = re.compile(r"Collected : (\d+)")


def _instructions(subject: str, requests: int, redis_url: str | None) -> int:
    """Instructions callgrind counted for the whole process serving ``requests`` twice (the
    warm-up round and one measured round)."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.edge_cost",
        "--rounds",
        "1",
        "--requests",
        str(requests),
        "--only",
        subject,
    ]
    if redis_url is not None:
        command += ["--redis-url", redis_url]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{subject}: callgrind run failed:\n{done.stdout}{done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(subject: str, redis_url: str | None) -> float:
    """Instructions for one request of ``subject``: the difference of a short and a long run."""
    few = _instructions(subject, FEW_REQUESTS, redis_url)
    many = _instructions(subject, MANY_REQUESTS, redis_url)
    return (many - few) / (2 * (MANY_REQUESTS - FEW_REQUESTS))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instruction_cost", description=__doc__)
    parser.add_argument("--redis-url", help="also count the redis backend's /v1/me and yardstick")
    parser.add_argument("--only", action="append", default=[], help="count this subject only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    subjects = list(args.only) or [
        *MEMORY_SUBJECTS,
        *(REDIS_SUBJECTS if args.redis_url else ()),
    ]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        counts = dict(
            zip(
                subjects,
                pool.map(lambda subject: per_request(subject, args.redis_url), subjects),
                strict=True,
            )
        )
    print("instructions per request (callgrind, PYTHONHASHSEED=0)")
    for subject, count in counts.items():
        print(f"  {subject:32s} {count:10.0f}")
    for route, yardstick in PAIRS:
        if route in counts and yardstick in counts:
            print(f"  {yardstick} / {route}: {counts[yardstick] / counts[route]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
