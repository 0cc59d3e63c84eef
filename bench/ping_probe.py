"""A Redis client in its own process that PINGs until told to stop, then reports its waits.

Run next to a long operation (``clear()`` over a million keys) to show whether that operation
ever blocks Redis for other clients. A separate process, so that the operation's own event loop
can never delay the probe and be mistaken for Redis being blocked. It pauses about a millisecond
between PINGs so as not to take a core from the server it is watching.

Protocol: prints ``ready`` once connected; stops at the first line (or EOF) on stdin; prints one
JSON line ``{"count": n, "median_ms": .., "p99_ms": .., "worst_ms": ..}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from redis import Redis

from bench.stats import Distribution

PAUSE_S = 0.001


def main(url: str) -> None:
    client = Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
    client.ping()
    stop = threading.Event()

    def wait_for_stop() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    print("ready", flush=True)
    waits_ms: list[float] = []
    while not stop.is_set():
        start = time.perf_counter()
        client.ping()
        waits_ms.append((time.perf_counter() - start) * 1_000)
        time.sleep(PAUSE_S)
    client.close()
    summary = Distribution.of(waits_ms or [0.0])
    print(
        json.dumps(
            {
                "count": summary.count,
                "median_ms": summary.median,
                "p99_ms": summary.p99,
                "worst_ms": summary.worst,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1])
