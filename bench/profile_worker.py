"""Where a gunicorn worker's time goes under load: py-spy against the real server.

``python -m bench.profile_worker [--backend memory] [--path /v1/me] [--seconds 8]`` starts
``game-api serve --workers 2``, drives ``path`` with wrk, records one worker with
``py-spy record --format raw`` (collapsed stacks), and prints the share of samples spent in the
frames that matter for the request path. The raw profile is kept for flame-graph tools.
``--bare`` records the bare FastAPI app (``bench.bare_app``) instead, the ``/healthz`` yardstick.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bench.backends import unique_prefix
from bench.redis_keys import delete_prefix
from bench.servers import (
    BareAppServer,
    LiveServer,
    connections_per_worker,
    server_settings,
    wait_for_workers,
)
from bench.wrk import run_wrk

FRAMES_OF_INTEREST = (
    "RequestResponseCycle.run_asgi",
    "solve_dependencies",
    "run_in_threadpool",
    "Condition.notify",
    "AuthenticatedRoute.handle",
    "ApiKeyService.authenticate",
    "_IncludedRouter._match",
    "RequestLimitsMiddleware.__call__",
    "serialize_response",
    "RequestResponseCycle.send",
)


def py_spy() -> str:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else "py-spy"


def summarise(raw_profile: Path, top: int = 20) -> str:
    """Shares of the event-loop thread's samples (the thread that serves requests).

    Inclusive shares count a function once per stack; "waiting" is the loop parked in epoll
    (the ``Runner.run`` frame on top, with nothing of Python above it). Thread-pool threads are
    counted apart: their samples are mostly parked on a condition variable (as are those of
    aiosqlite's connection thread, which serves the revocation poll).
    """
    loop_total = pool_total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in raw_profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [frame.split(" (")[0] for frame in stack.split(";")]
        if "WorkerThread.run" in frames or "_connection_worker_thread" in frames:
            pool_total += count
            continue
        loop_total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not loop_total:
        return "no samples of the event-loop thread (was the worker idle?)"
    waiting = own["Runner.run"]
    lines = [
        f"event-loop thread: {loop_total} samples, {100 * waiting / loop_total:.1f}% waiting "
        f"in epoll; thread-pool threads: {pool_total} samples",
        "",
        "frames of interest (inclusive, % of the event-loop thread):",
    ]
    lines += [
        f"  {100 * inclusive[name] / loop_total:5.1f}%  {name}" for name in FRAMES_OF_INTEREST
    ]
    lines += ["", "top self time (% of the event-loop thread):"]
    lines += [f"  {100 * count / loop_total:5.1f}%  {name}" for name, count in own.most_common(top)]
    return "\n".join(lines)


def record(
    backend: str, path: str, seconds: int, redis_url: str, output: Path, *, bare: bool = False
) -> None:
    prefix = unique_prefix(f"profile-{backend}")
    server: BareAppServer | LiveServer
    if bare:
        server = BareAppServer(workers=2)
        key = None
    else:
        server = live = LiveServer(
            server_settings(
                backend, redis_url, prefix, BENCH_ROUTES=True, APIKEY_CACHE_TTL_SECONDS=3_600
            ),
            workers=2,
        )
        key = live.create_admin_key()
    base_url = f"http://127.0.0.1:{server.port}"
    try:
        with server:
            workers = wait_for_workers(server)
            run_wrk(base_url + path, seconds=2, api_key=key)
            load = threading.Thread(
                target=run_wrk,
                args=(base_url + path,),
                kwargs={"seconds": seconds + 4, "api_key": key},
            )
            load.start()
            time.sleep(1)  # wrk opens its connections; then we look where they landed
            split = connections_per_worker(server)
            # The busiest worker: connections may sit unevenly on the two.
            worker = max(split, key=lambda pid: split[pid]) if split else workers[0]
            subprocess.run(
                [py_spy(), "record", "-p", str(worker), "-d", str(seconds), "-r", "250",
                 "--format", "raw", "--nonblocking", "-o", str(output)],
                check=True,
                capture_output=True,
            )  # fmt: skip
            load.join()
    finally:
        if not bare:
            delete_prefix(redis_url, prefix)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_worker", description=__doc__)
    parser.add_argument("--backend", default="memory", choices=["memory", "redis", "tiered"])
    parser.add_argument("--path", default="/v1/me")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--output", type=Path, default=Path("/tmp/game-api-worker.pyspy.txt"))
    parser.add_argument("--bare", action="store_true", help="profile bench.bare_app instead")
    args = parser.parse_args(argv)
    record(args.backend, args.path, args.seconds, args.redis_url, args.output, bare=args.bare)
    print(f"raw profile: {args.output}\n")
    print(summarise(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
