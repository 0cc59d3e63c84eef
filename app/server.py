"""Serving: gunicorn as the process manager, uvicorn workers running ``create_app``.

Each worker builds its own app (no ``preload_app``), so every worker has its own container,
Redis pool and database engine created after the fork, and its own in-memory cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from app.core.log_setup import gunicorn_logconfig
from app.core.runtime_info import WORKERS_ENV_VAR
from configs import Settings

# Read by ``prometheus_client`` when it is first imported (in the workers, by ``create_app``):
# set before that, it puts every metric in per-process files that a scrape sums.
MULTIPROC_ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"

# ``uvicorn_worker.UvicornWorker`` (``uvicorn.workers`` is deprecated in the uvicorn in use) with
# the header and connection limits enforced in its HTTP protocol; see app/server_worker.py.
WORKER_CLASS = "app.server_worker.GameApiUvicornWorker"


class GameApiServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """A gunicorn application configured in code rather than from ``sys.argv``."""

    def __init__(self, settings: Settings, host: str, port: int, workers: int) -> None:
        self._settings = settings
        self._options: dict[str, Any] = {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": WORKER_CLASS,
            "loglevel": settings.LOG_LEVEL.lower(),
            "errorlog": "-",
            "accesslog": None,
            # gunicorn's own lines in the service's format (it re-runs dictConfig in setup).
            "logconfig_dict": gunicorn_logconfig(settings.LOG_LEVEL, settings.LOG_FORMAT),
            "child_exit": _child_exit,
            "graceful_timeout": 10,
            # Passed on by the uvicorn worker as uvicorn's ``timeout_keep_alive``.
            "keepalive": settings.HTTP_KEEPALIVE_TIMEOUT_SECONDS,
            "proc_name": "game-api",
            # gunicorn >= 25 opens a control socket at one per-user path by default, so two
            # servers on one machine (tests, benchmarks, a dev server) would fight over it.
            "control_socket_disable": True,
        }
        super().__init__()

    @property
    def settings(self) -> Settings:
        """Read by each worker (``GameApiUvicornWorker``) for its connection limits."""
        return self._settings

    def load_config(self) -> None:
        for name, value in self._options.items():
            self.cfg.set(name, value)

    def load(self) -> FastAPI:
        from app.main import create_app  # imported in the worker, after the fork

        # The worker notes each request and bounds bodies itself (app/server_worker.py).
        return create_app(self._settings, edge_in_server=True)


def _child_exit(_server: Any, worker: Any) -> None:
    """A worker died (or was replaced): its live gauges stop counting; counters stay summed."""
    if os.environ.get(MULTIPROC_ENV_VAR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def prepare_metrics_dir(settings: Settings) -> tuple[Path, bool]:
    """The directory the workers share metric files in, emptied; and whether we made it.

    ``METRICS_DIR`` when set (its old ``*.db`` files removed: they belong to a previous
    server, whose counts must not be added to this one's), else a fresh temporary directory.
    """
    if settings.METRICS_DIR:
        path = Path(settings.METRICS_DIR)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path, False
    return Path(tempfile.mkdtemp(prefix="game-api-metrics-")), True


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run until gunicorn is told to stop (SIGTERM, SIGINT); gunicorn exits the process."""
    os.environ[WORKERS_ENV_VAR] = str(workers)
    made: Path | None = None
    if settings.METRICS_ENABLED:
        path, ours = prepare_metrics_dir(settings)
        os.environ[MULTIPROC_ENV_VAR] = str(path)
        made = path if ours else None
    try:
        GameApiServer(settings, host, port, workers).run()
    finally:  # gunicorn leaves through SystemExit
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
