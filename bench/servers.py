"""The real server for the end-to-end parts: the project's ``LiveServer`` with benchmark settings.

``tests.support.live_server.LiveServer`` runs ``game-api serve`` exactly as an operator would
(settings as environment variables, its own SQLite file); this module adds what measuring needs:
the settings of one backend and the gunicorn workers' process ids (for py-spy, and to wait until
every worker has booted before load starts).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import httpx

from tests.support.live_server import LiveServer
from tests.support.redis_server import free_port

__all__ = [
    "BareAppServer",
    "LiveServer",
    "bare_app_command",
    "children_of",
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


class Served(Protocol):
    """What the helpers below need of a server: its master process and port."""

    @property
    def process(self) -> subprocess.Popen[bytes] | None: ...

    @property
    def port(self) -> int: ...

    @property
    def workers(self) -> int: ...


def bare_app_command(port: int, workers: int, *options: str) -> list[str]:
    """gunicorn serving ``bench.bare_app`` as ``BareAppServer`` runs it, plus ``options``."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    return [
        str(gunicorn), "bench.bare_app:app",
        "--worker-class", "uvicorn_worker.UvicornWorker",
        "--workers", str(workers),
        "--bind", f"127.0.0.1:{port}",
        "--log-level", "warning",
        "--no-control-socket",
        *options,
    ]  # fmt: skip


class BareAppServer:
    """``bench.bare_app`` under gunicorn with ``uvicorn_worker.UvicornWorker``, like ours.

    The same worker count and access log off as ``game-api serve``; uvicorn's stock HTTP
    protocol (httptools) where ours has a subclass enforcing header and connection limits, so
    that cost counts against us too.
    """

    def __init__(self, workers: int = 2, startup_timeout: float = 60.0) -> None:
        self.workers = workers
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="bench-bare-"))
        self.log_path = self._dir / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                bare_app_command(self.port, self.workers),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                log_text = self.log_path.read_text(errors="replace")
                raise RuntimeError(f"the bare app's gunicorn exited:\n{log_text}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the bare app did not become healthy")
            time.sleep(0.05)

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> BareAppServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def children_of(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (``OSError`` once it has gone)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def worker_pids(server: Served) -> list[int]:
    """The gunicorn workers: the children of the master process."""
    if server.process is None:
        return []
    try:
        return children_of(server.process.pid)
    except OSError:
        return []


def wait_for_workers(server: Served, timeout: float = 60.0) -> list[int]:
    """Until the master has forked all its workers (their app then loads within a second or two;
    the warm-up load that follows covers that)."""
    deadline = time.monotonic() + timeout
    while len(pids := worker_pids(server)) < server.workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(pids)} of {server.workers} workers started")
        time.sleep(0.05)
    return pids


def connections_per_worker(server: Served) -> dict[int, int]:
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
