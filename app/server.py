"""Serving: gunicorn as the process manager, uvicorn workers running ``create_app``.

Each worker builds its own app (no ``preload_app``), so every worker has its own container,
Redis pool and database engine created after the fork, and its own in-memory cache.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from configs import Settings

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

        return create_app(self._settings)


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run until gunicorn is told to stop (SIGTERM, SIGINT); gunicorn exits the process."""
    GameApiServer(settings, host, port, workers).run()
