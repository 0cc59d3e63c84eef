"""A private Redis Sentinel deployment on free loopback ports: one primary, one replica and three
sentinels, for tests that fail the primary over or kill it outright.

Topology (every process a real ``redis-server``, each in a temporary directory of the set)::

    sentinel :s1 --+                        primary :p  <---- replica :r  (--replicaof p)
    sentinel :s2 --+-- monitor mymaster --> (role switches on failover)
    sentinel :s3 --+   quorum 2, down-after DOWN_AFTER_MS

Each sentinel is ``redis-server <its own config file> --sentinel``: a sentinel rewrites its
file as it learns the topology, so the three never share one. ``start()`` returns once every
sentinel sees the primary, the replica (with its link up) and the two other sentinels, so a
failover, forced or automatic, can be decided and carried out.

Usage::

    with SentinelSet() as redis:
        env = {"REDIS_TOPOLOGY": "sentinel", "REDIS_SENTINELS": redis.sentinel_addresses}
        old = redis.current_primary()
        new = redis.failover()               # SENTINEL FAILOVER, until the switch is visible
        redis.wait_replica_of(new, old)      # the old primary re-joined as a replica
        killed = redis.kill_primary()        # SIGKILL; sentinel promotes the replica
        newest = redis.wait_for_new_primary(killed)
        redis.restart_as_replica(killed)     # back to one primary and one replica

Every process is stopped in ``close()`` (also when ``start()`` failed half-way), and the
sentinels' logs are kept in ``log_text()`` for a failing test's message.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis

from tests.support.redis_server import free_port

SERVICE_NAME = "mymaster"
QUORUM = 2
# Small enough that a killed primary is replaced within a few seconds, large enough that a
# loaded two-core machine does not see a slow answer as a dead primary.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
WAIT_SECONDS = 90.0
"""How long a wait for the sentinels to act may take. A sentinel whose timer fires over two
seconds late (a machine stalled under the test's load) enters TILT mode and acts on nothing for
the next 30 s; then it needs up to a few INFO periods to reconfigure a replaced primary. A wait
returns as soon as its condition holds, so the bound only decides when a stuck set is reported."""
_POLL_SECONDS = 0.05

T = TypeVar("T")


def _wait_for(
    what: str, condition: Callable[[], T | None], timeout: float, diagnose: Callable[[], str]
) -> T:
    """Poll ``condition`` until it returns something other than ``None``/``False``."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            result = condition()
        except (redis.RedisError, OSError) as exc:
            result, last_error = None, f"{type(exc).__name__}: {exc}"
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {timeout}s {last_error}\n{diagnose()}")
        time.sleep(_POLL_SECONDS)


class _ServerProcess:
    """One ``redis-server`` process (data node or sentinel) on a fixed port."""

    def __init__(self, binary: str, port: int, args: Sequence[str], log_path: Path) -> None:
        self.binary = binary
        self.port = port
        self.args = list(args)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, *self.args], stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )

    def answers(self) -> bool:
        if not self.running:
            return False
        with self.client(0.2) as client:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last words to replicas or sentinels (a crashed host)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case a test paused it
            process.kill()
        process.wait(timeout=10)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class SentinelSet:
    """One primary, one replica, three sentinels; see the module docstring."""

    def __init__(
        self,
        *,
        service_name: str = SERVICE_NAME,
        sentinels: int = 3,
        down_after_ms: int = DOWN_AFTER_MS,
        failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self._binary = binary
        self.service_name = service_name
        self._dir = Path(tempfile.mkdtemp(prefix="game-api-sentinel-"))
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms
        self.nodes: dict[int, _ServerProcess] = {}
        for _ in range(2):
            port = free_port()
            self.nodes[port] = self._data_node(port)
        self.initial_primary, self.initial_replica = list(self.nodes)
        self.sentinels = [self._sentinel(free_port()) for _ in range(sentinels)]

    # -- addresses --------------------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> str:
        """``REDIS_SENTINELS`` for the service: ``127.0.0.1:p1,127.0.0.1:p2,...``."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def node(self, port: int) -> _ServerProcess:
        return self.nodes[port]

    # -- processes --------------------------------------------------------------------------

    def _data_node(self, port: int) -> _ServerProcess:
        directory = self._dir / f"node-{port}"
        directory.mkdir()
        args = [
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            # A re-joining node needs a full copy: send it at once, not after the default
            # five-second wait for more replicas to batch with.
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        return _ServerProcess(self._binary, port, args, self._dir / f"node-{port}.log")

    def _sentinel(self, port: int) -> _ServerProcess:
        config = self._dir / f"sentinel-{port}.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {self._dir}",
                    "sentinel resolve-hostnames no",
                    f"sentinel monitor {self.service_name} 127.0.0.1 "
                    f"{self.initial_primary} {QUORUM}",
                    f"sentinel down-after-milliseconds {self.service_name} {self._down_after_ms}",
                    f"sentinel failover-timeout {self.service_name} {self._failover_timeout_ms}",
                    f"sentinel parallel-syncs {self.service_name} 1",
                    "",
                ]
            )
        )
        return _ServerProcess(
            self._binary, port, [str(config), "--sentinel"], self._dir / f"sentinel-{port}.log"
        )

    def start(self, timeout: float = WAIT_SECONDS) -> None:
        """Primary, replica, sentinels; until every sentinel knows the whole set."""
        try:
            primary = self.nodes[self.initial_primary]
            primary.start()
            self._wait_answers(primary, timeout)
            replica = self.nodes[self.initial_replica]
            replica.args += ["--replicaof", "127.0.0.1", str(self.initial_primary)]
            replica.start()
            self._wait_answers(replica, timeout)
            for sentinel in self.sentinels:
                sentinel.start()
            for sentinel in self.sentinels:
                self._wait_answers(sentinel, timeout)
            self.wait_settled(timeout)
        except BaseException:
            self.close()
            raise

    def _wait_answers(self, process: _ServerProcess, timeout: float) -> None:
        def answers() -> bool:
            if process.process is not None and process.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {process.port} exited "
                    f"with {process.process.returncode}:\n{self.log_text()}"
                )
            return process.answers()

        _wait_for(f"redis-server on port {process.port}", answers, timeout, self.log_text)

    def close(self) -> None:
        """Stop every process (sentinels first, so none fails anything over meanwhile)."""
        for process in [*self.sentinels, *self.nodes.values()]:
            with contextlib.suppress(Exception):
                process.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> SentinelSet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def log_text(self, tail_lines: int = 30) -> str:
        """The last lines of every process's log, for a failure message."""
        parts = []
        for path in sorted(self._dir.glob("*.log")):
            with contextlib.suppress(OSError):
                lines = path.read_text(errors="replace").splitlines()[-tail_lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- what the sentinels say -------------------------------------------------------------

    @contextlib.contextmanager
    def _sentinel_client(self, sentinel: _ServerProcess) -> Iterator[redis.Redis]:
        with sentinel.client() as client:
            yield client

    def _ask_sentinel(self, sentinel: _ServerProcess, *command: str) -> Any:
        with self._sentinel_client(sentinel) as client:
            return client.execute_command(*command)

    def primary_seen_by(self, sentinel: _ServerProcess) -> int | None:
        answer = self._ask_sentinel(
            sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name
        )
        return None if not answer else int(answer[1])

    def current_primary(self) -> int:
        """The primary's port, as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                port = self.primary_seen_by(sentinel)
                if port is not None:
                    return port
        raise RuntimeError(f"no sentinel names a primary\n{self.log_text()}")

    def _state(self, sentinel: _ServerProcess) -> dict[str, Any]:
        """What ``sentinel`` knows: the primary, its flags, replicas and peer count."""
        master = _pairs(self._ask_sentinel(sentinel, "SENTINEL", "MASTER", self.service_name))
        replicas = [
            _pairs(entry)
            for entry in self._ask_sentinel(sentinel, "SENTINEL", "REPLICAS", self.service_name)
        ]
        return {"master": master, "replicas": replicas}

    def _settled_on(self, primary: int, replicas: int, sentinel: _ServerProcess) -> bool:
        state = self._state(sentinel)
        master = state["master"]
        if int(master["port"]) != primary or master["flags"] != "master":
            return False
        if int(master["num-other-sentinels"]) < len(self.sentinels) - 1:
            return False
        healthy = [
            r
            for r in state["replicas"]
            if r["flags"] == "slave"
            and r.get("master-link-status") == "ok"
            and int(r.get("master-port", -1)) == primary
        ]
        return len(healthy) >= replicas

    def _lists_replica(self, sentinel: _ServerProcess, primary: int, replica: int) -> bool:
        state = self._state(sentinel)
        if int(state["master"]["port"]) != primary:
            return False
        return any(
            int(r["port"]) == replica
            and "s_down" not in r["flags"]
            and "disconnected" not in r["flags"]
            for r in state["replicas"]
        )

    def wait_settled(self, timeout: float = WAIT_SECONDS, replicas: int = 1) -> int:
        """Until every sentinel agrees on the primary (also seen so by the node itself), knows
        its peers and ``replicas`` healthy replicas of it; returns the primary's port."""

        def settled() -> int | None:
            primary = self.current_primary()
            if self._role(primary) != "master":
                return None
            if all(self._settled_on(primary, replicas, s) for s in self.sentinels):
                return primary
            return None

        return _wait_for("the sentinel set to settle", settled, timeout, self._diagnose)

    def _role(self, port: int) -> str | None:
        node = self.nodes[port]
        if not node.running:
            return None
        with node.client(0.5) as client:
            role = client.execute_command("ROLE")
        return str(role[0])

    def role_of(self, port: int) -> str | None:
        """``master``/``slave`` as the node itself says, ``None`` when it does not answer."""
        try:
            return self._role(port)
        except redis.RedisError:
            return None

    def _diagnose(self) -> str:
        lines = []
        for sentinel in self.sentinels:
            try:
                state = self._state(sentinel)
                lines.append(
                    f"sentinel {sentinel.port}: master={state['master'].get('port')} "
                    f"flags={state['master'].get('flags')} "
                    f"peers={state['master'].get('num-other-sentinels')} replicas="
                    + ", ".join(
                        f"{r.get('port')}:{r.get('flags')}:{r.get('master-link-status')}"
                        for r in state["replicas"]
                    )
                )
            except redis.RedisError as exc:
                lines.append(f"sentinel {sentinel.port}: {exc}")
        for port in self.nodes:
            lines.append(f"node {port}: role={self.role_of(port)}")
        return "\n".join(lines) + "\n" + self.log_text()

    # -- faults -----------------------------------------------------------------------------

    def failover(self, timeout: float = WAIT_SECONDS) -> int:
        """``SENTINEL FAILOVER``; returns the new primary's port once every sentinel names it
        and it says ``role:master`` itself. The old primary may still think it is one: use
        ``wait_replica_of`` before a test needs it as a replica."""
        old = self.start_failover()
        return self.wait_for_new_primary(old, timeout)

    def start_failover(self) -> int:
        """Send ``SENTINEL FAILOVER`` and return at once; returns the primary being replaced."""
        old = self.current_primary()
        self._ask_sentinel(self.sentinels[0], "SENTINEL", "FAILOVER", self.service_name)
        return old

    def wait_for_new_primary(self, old: int, timeout: float = WAIT_SECONDS) -> int:
        """Until every sentinel names a primary other than ``old`` and that node says so."""

        def switched() -> int | None:
            seen = set()
            for sentinel in self.sentinels:
                if not sentinel.running:
                    continue
                seen.add(self.primary_seen_by(sentinel))
            if len(seen) != 1:
                return None
            (new,) = seen
            if new is None or new == old or self.role_of(new) != "master":
                return None
            return new

        return _wait_for(f"a primary other than {old}", switched, timeout, self._diagnose)

    def wait_promoted(self, candidate: int, timeout: float = WAIT_SECONDS) -> None:
        """Until ``candidate`` answers ``role:master`` (before sentinels may have switched)."""
        _wait_for(
            f"node {candidate} to be promoted",
            lambda: self.role_of(candidate) == "master",
            timeout,
            self._diagnose,
        )

    def wait_demoted(self, port: int, timeout: float = WAIT_SECONDS) -> None:
        """Until the node on ``port`` no longer says ``role:master`` (sentinel reconfigured a
        replaced primary that is still running)."""
        _wait_for(
            f"node {port} to step down",
            lambda: self.role_of(port) not in ("master", None),
            timeout,
            self._diagnose,
        )

    def wait_replica_of(self, primary: int, replica: int, timeout: float = WAIT_SECONDS) -> None:
        """Until ``replica`` replicates ``primary`` with its link up and every sentinel lists
        it as a reachable replica of ``primary``, so a later failover has one to promote.

        Not until each sentinel's view of the link is fresh: sentinels read a replica's INFO
        every ten seconds, but every second once its primary is down, which is when it counts.
        """

        def in_sync() -> bool:
            node = self.nodes[replica]
            with node.client(0.5) as client:
                info = client.info("replication")
            if info.get("role") != "slave" or int(info.get("master_port", -1)) != primary:
                return False
            if info.get("master_link_status") != "up":
                return False
            return all(self._lists_replica(s, primary, replica) for s in self.sentinels)

        _wait_for(f"node {replica} to replicate {primary}", in_sync, timeout, self._diagnose)

    def kill_primary(self) -> int:
        """SIGKILL the current primary; returns its port."""
        port = self.current_primary()
        self.nodes[port].kill()
        return port

    def restart_as_replica(self, port: int, timeout: float = WAIT_SECONDS) -> None:
        """Start the killed node again, empty, replicating the current primary (as an operator
        would bring a crashed host back; a node restarted as a primary could win back its
        role with an empty dataset)."""
        node = self.nodes[port]
        if node.running:
            raise RuntimeError(f"node {port} is still running")
        primary = self.current_primary()
        self.nodes[port] = node = self._data_node_again(port)
        node.args += ["--replicaof", "127.0.0.1", str(primary)]
        node.start()
        self._wait_answers(node, timeout)
        self.wait_replica_of(primary, port, timeout)

    def _data_node_again(self, port: int) -> _ServerProcess:
        directory = self._dir / f"node-{port}"
        shutil.rmtree(directory, ignore_errors=True)
        return self._data_node(port)

    # -- looking inside a data node ---------------------------------------------------------

    def info(self, port: int, section: str) -> dict[str, Any]:
        with self.nodes[port].client() as client:
            info: dict[str, Any] = client.info(section)
            return info

    def keyspace_hits(self, port: int) -> int:
        return int(self.info(port, "stats")["keyspace_hits"])

    def count_keys(self, port: int, match: str) -> int:
        """How many keys match ``match`` on the node (bounded ``SCAN`` steps)."""
        with self.nodes[port].client() as client:
            return sum(1 for _ in client.scan_iter(match=match, count=1000))

    def value(self, port: int, key: str) -> str | None:
        with self.nodes[port].client() as client:
            raw: str | None = client.get(key)
            return raw

    def subscribers(self, port: int, channel: str) -> int:
        with self.nodes[port].client() as client:
            counts = client.pubsub_numsub(channel)
        return int(counts[0][1]) if counts else 0

    def wait_subscribers(
        self, port: int, channel: str, at_least: int, timeout: float = 15.0
    ) -> int:
        """Until ``at_least`` clients of the node on ``port`` are subscribed to ``channel``."""

        def enough() -> int | None:
            count = self.subscribers(port, channel)
            return count if count >= at_least else None

        return _wait_for(
            f"{at_least} subscribers of {channel} on node {port}", enough, timeout, self._diagnose
        )


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """A sentinel's flat ``[name, value, name, value, ...]`` answer as a dict."""
    if isinstance(flat, dict):
        return flat
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
