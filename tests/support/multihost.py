"""Two hosts of the real service sharing one Redis and one PostgreSQL, each behind its own
network links that a test can cut or hang: the smallest deployment in which "a revocation is
final when it returns" can be broken by a partition.

Topology::

                      +-- proxy A/redis --+             +-- proxy A/db --+
    host A (gunicorn, |                   |             |                | host A
      2 workers) -----+                   +-> redis <-+ +-> PostgreSQL <-+
    host B (gunicorn, |                   |           | |                | host B
      2 workers) -----+-- proxy B/redis --+           +-+-- proxy B/db --+

A ``Host`` is one ``LiveServer`` (``game-api serve --workers 2``) whose ``REDIS_URL`` and
``DATABASE_URL`` point at its own two ``ThreadedTcpProxy`` links, so a fault on host B's Redis
link leaves host A's untouched: a partition between one host and one store, which is what
happens in production and what no single-process test can show.

Usage::

    with running_cluster(postgres_server_url) as cluster, cluster.hosts("tiered") as (a, b):
        victim = create_key_over_http(a, "victim")
        b.redis_link.hang()
        with LoadGenerator([a, b], {"victim": victim.key}) as load:
            outcome = revoke_over_http(a, victim.prefix, timeout=15)
            load.run_until(...)
        admits = admitted_after(load.samples, "victim", outcome.returned_at)
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import httpx
from sqlalchemy.engine import make_url

from tests.support.databases import temporary_postgres_database
from tests.support.live_server import WORKER_ID_HEADER, LiveServer, console_script
from tests.support.redis_server import RedisServerProcess
from tests.support.tcp_proxy import ProxyState, ThreadedTcpProxy

WORKERS_PER_HOST = 2
# Longer than any probing window of a test, so a stale cached copy is still there to be found:
# an admit after the revoke then shows a missed invalidation, never an entry that expired.
LEASE_SECONDS = 3
POLL_MS = 250
CACHE_TTL_SECONDS = 60


# -- what the helpers need of a host ---------------------------------------------------------


class ServingHost(Protocol):
    """A running ``game-api serve`` the helpers below can load, create keys on and revoke on:
    a ``Host`` behind its proxies here, or a host reaching Redis directly (the failover tests)."""

    @property
    def name(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def admin_key(self) -> str: ...

    @property
    def server(self) -> LiveServer: ...


# -- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    key: str
    prefix: str


def create_key_with_cli(database_url: str, name: str, scopes: Sequence[str]) -> Key:
    """A key written straight to the database by ``game-api keys create`` (no server needed:
    the cluster's admin key exists before any host starts)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GAME_API_CONFIG", "APIKEY_CACHE_BACKEND", "REDIS_URL")
    }
    env["DATABASE_URL"] = database_url
    args = [console_script(), "keys", "create", "--name", name, "--json"]
    for scope in scopes:
        args += ["--scope", scope]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise AssertionError(f"game-api keys create failed: {result.stderr.strip()}")
    created: dict[str, Any] = json.loads(result.stdout)
    return Key(key=str(created["key"]), prefix=str(created["prefix"]))


def create_key_over_http(host: ServingHost, name: str, scopes: Sequence[str] = ("read",)) -> Key:
    response = host.server.post(
        "/v1/keys", api_key=host.admin_key, json_body={"name": name, "scopes": list(scopes)}
    )
    if response.status_code != 201:
        raise AssertionError(
            f"creating {name} on {host.name}: {response.status_code} {response.text}"
        )
    created = response.json()
    return Key(key=str(created["key"]), prefix=str(created["prefix"]))


# -- hosts -----------------------------------------------------------------------------------


def _children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from ``/proc``, which every Linux kernel has)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone in the meantime
        # The command name is in parentheses and may hold spaces: the fields follow the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


class Host:
    """One ``game-api serve`` reaching Redis and PostgreSQL only through its own two links."""

    def __init__(
        self,
        name: str,
        cluster: Cluster,
        backend: str,
        key_prefix: str,
        extra_env: Mapping[str, str] | None = None,
        workers: int = WORKERS_PER_HOST,
    ) -> None:
        self.name = name
        self.admin_key = cluster.admin_key.key
        self.redis_link = ThreadedTcpProxy("127.0.0.1", cluster.redis.port, name=f"{name}-redis")
        db_url = make_url(cluster.database_url)
        self.db_link = ThreadedTcpProxy(
            db_url.host or "127.0.0.1", db_url.port or 5432, name=f"{name}-db"
        )
        env = {
            "APIKEY_CACHE_BACKEND": backend,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_link.port}/0",
            "DATABASE_URL": db_url.set(host="127.0.0.1", port=self.db_link.port).render_as_string(
                hide_password=False
            ),
            "APIKEY_CACHE_REDIS_KEY_PREFIX": key_prefix,
            "APIKEY_CACHE_TTL_SECONDS": str(CACHE_TTL_SECONDS),
            "APIKEY_CACHE_L1_TTL_SECONDS": str(CACHE_TTL_SECONDS),
            # A short lease keeps the cases that must wait for one (a frozen or cut-off
            # member) quick; the mechanism is the same at the default.
            "APIKEY_LEASE_SECONDS": str(LEASE_SECONDS),
            "APIKEY_REVOCATION_POLL_MS": str(POLL_MS),
        }
        env.update(extra_env or {})
        self.server = LiveServer(env, workers=workers)
        self._frozen: set[int] = set()

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self.redis_link.start()
        self.db_link.start()
        self.server.start()

    def heal(self) -> None:
        """Thaw every frozen worker and restore both links."""
        for pid in list(self._frozen):
            self.thaw(pid)
        for link in (self.redis_link, self.db_link):
            with contextlib.suppress(RuntimeError):
                link.heal()

    def close(self) -> None:
        """Heal first: a frozen worker or a hung link would stall gunicorn's graceful stop."""
        try:
            self.heal()
            self.server.close()
        finally:
            self.redis_link.close()
            self.db_link.close()

    # -- workers ------------------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: ``game-api serve`` is the gunicorn master itself."""
        process = self.server.process
        if process is None:
            raise RuntimeError(f"host {self.name} is not running")
        return _children_of(process.pid)

    def freeze(self, pid: int) -> None:
        """SIGSTOP one worker: its sockets stay open, it runs nothing (a long GC pause, a VM
        stall, a laptop lid) until ``thaw``."""
        if pid not in self.worker_pids():
            raise ValueError(f"{pid} is not a worker of host {self.name}")
        os.kill(pid, signal.SIGSTOP)
        self._frozen.add(pid)

    def thaw(self, pid: int) -> None:
        os.kill(pid, signal.SIGCONT)
        self._frozen.discard(pid)

    def prime(self, api_key: str) -> set[str]:
        """Until every worker has answered 200 for ``api_key`` (and so cached it)."""
        return self.server.prime_every_worker(api_key)

    def has_source_of_truth(self, backend: str) -> bool:
        """Whether a lookup on this host can reach a store that knows the key's state."""
        db_up = self.db_link.state is ProxyState.FORWARDING
        redis_up = self.redis_link.state is ProxyState.FORWARDING
        return db_up or (backend != "memory" and redis_up)


# -- the cluster -----------------------------------------------------------------------------


@dataclass
class Cluster:
    """A private redis-server and a throw-away PostgreSQL database, shared by every host."""

    redis: RedisServerProcess
    database_url: str
    admin_key: Key

    @contextlib.contextmanager
    def hosts(
        self,
        backend: str,
        names: Sequence[str] = ("A", "B"),
        extra_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Iterator[list[Host]]:
        """Fresh hosts (started side by side) with a Redis key prefix of their own, so nothing
        one test cached or broke is seen by the next; all stopped and healed on exit."""
        key_prefix = f"multihost:{uuid.uuid4().hex[:12]}:"
        hosts = [
            Host(name, self, backend, key_prefix, (extra_env or {}).get(name)) for name in names
        ]
        try:
            _run_side_by_side([host.start for host in hosts])
            yield hosts
        finally:
            _run_side_by_side([host.close for host in hosts])


def _run_side_by_side(actions: Sequence[Callable[[], None]]) -> None:
    """Run each action in a thread of its own; re-raise the first failure after all ended."""
    errors: list[BaseException] = []

    def run(action: Callable[[], None]) -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@contextlib.contextmanager
def running_cluster(postgres_server_url: str) -> Iterator[Cluster]:
    redis = RedisServerProcess()
    redis.start()
    try:
        with temporary_postgres_database(postgres_server_url) as database_url:
            admin = create_key_with_cli(database_url, "multihost-admin", ["admin", "read", "write"])
            yield Cluster(redis=redis, database_url=database_url, admin_key=admin)
    finally:
        redis.close()


# -- revoking --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevokeOutcome:
    """``status`` and ``body`` are None when the client gave up (``error`` says why)."""

    status: int | None
    body: dict[str, Any] | None
    latency: float
    returned_at: float  # time.monotonic() when the client had its answer (or gave up)
    error: str | None = None

    @property
    def timed_out(self) -> bool:
        return self.error is not None and "timed out" in self.error.lower()

    @property
    def cache_invalidation(self) -> Any:
        return None if self.body is None else self.body.get("cache_invalidation")


def revoke_over_http(host: ServingHost, prefix: str, timeout: float) -> RevokeOutcome:
    """POST /v1/keys/{prefix}/revoke on ``host`` as an operator's client would, giving up (and
    closing the connection) once ``timeout`` seconds have passed in all: a total deadline,
    where an HTTP client's timeouts bound each read. Giving up is not cancelling: the server
    goes on with the revoke."""
    started = time.monotonic()
    deadline = started + timeout
    connection = http.client.HTTPConnection("127.0.0.1", host.port, timeout=timeout)
    try:
        connection.request(
            "POST",
            f"/v1/keys/{prefix}/revoke",
            headers={"X-API-Key": host.admin_key, "Connection": "close"},
        )
        if connection.sock is not None:
            connection.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        response = connection.getresponse()
        raw = response.read()
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        now = time.monotonic()
        return RevokeOutcome(None, None, now - started, now, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
    now = time.monotonic()
    try:
        body: dict[str, Any] | None = json.loads(raw)
    except ValueError:
        body = {"text": raw.decode(errors="replace")}
    return RevokeOutcome(status, body, now - started, now)


def wait_until_listed_revoked(host: ServingHost, prefix: str, timeout: float = 30.0) -> float:
    """Poll ``GET /v1/keys`` on ``host`` until the key shows ``revoked_at``; returns the time
    (monotonic) that answer arrived, after which the database has certainly committed it."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = host.server.get("/v1/keys", api_key=host.admin_key)
        except httpx.TransportError as exc:
            last = repr(exc)
            continue
        if response.status_code == 200:
            for key in response.json()["keys"]:
                if key["prefix"] == prefix and key["revoked_at"] is not None:
                    return time.monotonic()
            last = "listed, not revoked yet"
        else:
            last = f"{response.status_code} {response.text}"
        time.sleep(0.05)  # pacing between polls of a deadline-bounded wait
    raise AssertionError(f"{prefix} not listed as revoked on {host.name} in {timeout}s: {last}")


# -- load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One request: when it was sent and answered (time.monotonic()), where, and the outcome."""

    label: str
    host: str
    sent_at: float
    answered_at: float
    worker: str | None
    status: int | None
    error: str | None = None


def one_request(port: int, api_key: str, timeout: float) -> tuple[int | None, str | None, str]:
    """GET /v1/me on a connection of its own, so the kernel may hand it to any worker."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/v1/me", headers={"X-API-Key": api_key, "Connection": "close"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader(WORKER_ID_HEADER), ""
    except (OSError, http.client.HTTPException) as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()


@dataclass
class LoadGenerator:
    """Background threads sending requests with each key to every host, continuously, each on
    a fresh connection; every request is recorded as a ``Sample``.

    ``pause`` paces each thread (the machine's two cores also run the four workers under
    test); it is not a wait for anything.
    """

    hosts: Sequence[ServingHost]
    keys: Mapping[str, str]  # label -> plaintext key
    threads_per_host: int = 2
    request_timeout: float = 5.0
    pause: float = 0.01
    _samples: list[Sample] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> LoadGenerator:
        for host in self.hosts:
            for index in range(self.threads_per_host):
                thread = threading.Thread(
                    target=self._run, args=(host, index), name=f"load-{host.name}-{index}"
                )
                thread.daemon = True
                self._threads.append(thread)
                thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.request_timeout + 5)
        return self.samples

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def _run(self, host: ServingHost, index: int) -> None:
        labels = list(self.keys)
        turn = index  # threads of one host start on different keys
        while not self._stop.is_set():
            label = labels[turn % len(labels)]
            turn += 1
            sent_at = time.monotonic()
            status, worker, error = one_request(host.port, self.keys[label], self.request_timeout)
            sample = Sample(
                label, host.name, sent_at, time.monotonic(), worker, status, error or None
            )
            with self._lock:
                self._samples.append(sample)
            self._stop.wait(self.pause)

    def run_until(
        self,
        since: float,
        minimum_seconds: float,
        workers: Mapping[str, Iterable[str]],
        label: str,
        maximum_seconds: float = 15.0,
    ) -> None:
        """Keep the load running for at least ``minimum_seconds`` after ``since`` and until every
        named worker of every host has answered a ``label`` request sent after ``since`` (or
        ``maximum_seconds`` passed: the caller checks the coverage)."""
        wanted = {(host, worker) for host, each in workers.items() for worker in each}
        while True:
            now = time.monotonic()
            covered = workers_answering(self.samples, label, since)
            if now >= since + maximum_seconds:
                return
            if now >= since + minimum_seconds and wanted <= covered:
                return
            self._stop.wait(0.05)


# -- analysis --------------------------------------------------------------------------------


def sent_after(samples: Iterable[Sample], label: str, since: float) -> list[Sample]:
    return [s for s in samples if s.label == label and s.sent_at > since]


def admitted_after(samples: Iterable[Sample], label: str, since: float) -> list[Sample]:
    """The requests with ``label`` SENT after ``since`` that were admitted (200)."""
    return [s for s in sent_after(samples, label, since) if s.status == 200]


def workers_answering(samples: Iterable[Sample], label: str, since: float) -> set[tuple[str, str]]:
    """(host, worker) pairs that answered a ``label`` request sent after ``since``."""
    return {
        (s.host, s.worker)
        for s in sent_after(samples, label, since)
        if s.worker is not None and s.status is not None
    }


def outcome_counts(samples: Iterable[Sample]) -> dict[str, int]:
    """A status histogram ("200", "401", "503", "error") for a report line."""
    counts = Counter(str(s.status) if s.status is not None else "error" for s in samples)
    return dict(sorted(counts.items()))
