"""The real server for the end-to-end parts: the project's ``LiveServer`` with benchmark settings.

``tests.support.live_server.LiveServer`` runs ``game-api serve`` exactly as an operator would
(settings as environment variables, its own SQLite file); this module adds what measuring needs:
the settings of one backend and the gunicorn workers' process ids (for py-spy, and to wait until
every worker has booted before load starts).
"""

from __future__ import annotations

import collections
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support.live_server import LiveServer

__all__ = [
    "LiveServer",
    "connections_per_worker",
    "server_settings",
    "wait_for_workers",
    "worker_pids",
]


def server_settings(backend: str, redis_url: str, key_prefix: str, **extra: Any) -> dict[str, str]:
    """Environment settings for one backend; booleans become ``true``/``false``."""
    settings = {
        "APIKEY_CACHE_BACKEND": backend,
        "REDIS_URL": redis_url,
        "APIKEY_CACHE_REDIS_KEY_PREFIX": key_prefix,
        "EXPOSE_WORKER_ID": "false",
        "APIKEY_CACHE_HMAC_SECRET": "bench-only-record-signing-secret",
    }
    for name, value in extra.items():
        settings[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return settings


def worker_pids(server: LiveServer) -> list[int]:
    """The gunicorn workers: the children of the master process."""
    if server.process is None:
        return []
    pid = server.process.pid
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:
        return []


def wait_for_workers(server: LiveServer, timeout: float = 60.0) -> list[int]:
    """Until the master has forked all its workers (their app then loads within a second or two;
    the warm-up load that follows covers that)."""
    deadline = time.monotonic() + timeout
    while len(pids := worker_pids(server)) < server.workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(pids)} of {server.workers} workers started")
        time.sleep(0.05)
    return pids


def connections_per_worker(server: LiveServer) -> dict[int, int]:
    """Established client connections held by each worker right now (from ``ss -tnp``).

    Workers share one listening socket and an idle worker accepts greedily, so a burst of
    keep-alive connections (wrk opens all of them at once) can land mostly on one worker; this
    is how the benchmark notices it. Empty when ``ss`` is unavailable.
    """
    try:
        completed = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( sport = :{server.port} )"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    counts = collections.Counter(int(pid) for pid in re.findall(r"pid=(\d+)", completed.stdout))
    return {pid: counts.get(pid, 0) for pid in worker_pids(server)} if counts else {}
