"""The real service, as an operator runs it: ``game-api serve --workers N`` on a free port.

Usage::

    server = LiveServer({"APIKEY_CACHE_BACKEND": "redis", "REDIS_URL": url,
                         "APIKEY_CACHE_REDIS_KEY_PREFIX": key_prefix}, workers=3)
    admin_key = server.create_admin_key()      # through the CLI, before or after start()
    with server:                               # start() ... stop(), also on failure
        response = server.get("/v1/me", api_key=admin_key)   # a fresh connection each call
        server.prime_every_worker(admin_key)   # until each worker has answered 200 for the key

Settings travel as environment variables (``config_env``); a config file can be passed as
``{"GAME_API_CONFIG": path}``. Without ``DATABASE_URL`` the server gets a SQLite file in a
temporary directory of its own. ``EXPOSE_WORKER_ID`` is on, so every response names the
worker that answered (``worker_of(response)``). ``serve_args`` adds options to ``game-api serve``
(e.g. ``["--bootstrap-admin"]``); the server's output is in ``log_text()``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.redis_server import free_port

WORKER_ID_HEADER = "x-worker-id"
_INHERITED_SETTINGS = ("GAME_API_CONFIG", "APIKEY_CACHE_BACKEND", "REDIS_URL", "DATABASE_URL")


def console_script() -> str:
    """The installed ``game-api`` script of the interpreter running the tests."""
    candidate = Path(sys.executable).with_name("game-api")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("game-api")
    if found is None:
        raise RuntimeError("the game-api console script is not installed (pip install -e .)")
    return found


def worker_of(response: httpx.Response) -> str:
    worker: str | None = response.headers.get(WORKER_ID_HEADER)
    if worker is None:
        raise AssertionError("response has no X-Worker-Id header (EXPOSE_WORKER_ID is off?)")
    return worker


class LiveServer:
    """One ``game-api serve`` process tree; ``stop()`` always leaves nothing running."""

    def __init__(
        self,
        config_env: dict[str, str],
        workers: int = 3,
        *,
        serve_args: Sequence[str] = (),
        startup_timeout: float = 60.0,
    ) -> None:
        self.workers = workers
        self.serve_args = list(serve_args)
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self._dir = Path(tempfile.mkdtemp(prefix="game-api-live-"))
        self.log_path = self._dir / "server.log"
        env = {k: v for k, v in os.environ.items() if k not in _INHERITED_SETTINGS}
        env.update({"EXPOSE_WORKER_ID": "true", "LOG_LEVEL": "WARNING"})
        if "DATABASE_URL" not in config_env:
            env["DATABASE_URL"] = f"sqlite+aiosqlite:///{self._dir / 'game-api.db'}"
        env.update(config_env)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._migrated = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the command line, with the server's settings ---------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``game-api ARGS`` with this server's environment."""
        result = subprocess.run(
            [console_script(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"game-api {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def create_key(self, name: str, scopes: list[str]) -> dict[str, Any]:
        """A new key through the CLI (migrating the database first); its ``--json`` output."""
        if not self._migrated:
            self.cli("db", "upgrade")
            self._migrated = True
        args = ["keys", "create", "--name", name, "--json"]
        for scope in scopes:
            args += ["--scope", scope]
        created: dict[str, Any] = json.loads(self.cli(*args).stdout)
        return created

    def create_admin_key(self) -> str:
        return str(self.create_key("live-admin", ["admin", "read", "write"])["key"])

    # -- the server process -----------------------------------------------------------------

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("already started")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    console_script(), "serve",
                    "--host", "127.0.0.1",
                    "--port", str(self.port),
                    "--workers", str(self.workers),
                    *self.serve_args,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_until_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"game-api serve exited with {self.process.returncode}:\n{self.log_text()}"
                )
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"game-api serve did not become healthy:\n{self.log_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (gunicorn's graceful stop: the master reaps its workers before exiting),
        then SIGKILL to the process group if it hangs."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # The master still lives, so the group (master and workers) is still ours.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- requests ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        api_key: str | None = None,
        json_body: Any = None,
    ) -> httpx.Response:
        """One request on a fresh connection, so the kernel may hand it to any worker."""
        headers = {"Connection": "close"}
        if api_key is not None:
            headers["X-API-Key"] = api_key
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            return client.request(method, path, headers=headers, json=json_body)

    def get(self, path: str, *, api_key: str | None = None) -> httpx.Response:
        return self.request("GET", path, api_key=api_key)

    def post(
        self, path: str, *, api_key: str | None = None, json_body: Any = None
    ) -> httpx.Response:
        return self.request("POST", path, api_key=api_key, json_body=json_body)

    def prime_every_worker(
        self, api_key: str, path: str = "/v1/me", timeout: float = 60.0
    ) -> set[str]:
        """Request ``path`` with ``api_key`` until every worker has answered 200 at least once.

        Returns the worker ids. A worker that answered 200 has looked the key up and cached it.
        """
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < self.workers:
            response = self.get(path, api_key=api_key)
            if response.status_code != 200:
                raise AssertionError(f"priming got {response.status_code}: {response.text}")
            seen.add(worker_of(response))
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(seen)} of {self.workers} workers answered")
        return seen
