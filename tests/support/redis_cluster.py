"""A private Redis Cluster on loopback: 3 primaries and 3 replicas, for tests that kill nodes.

Six ``redis-server --cluster-enabled yes`` processes on free ports (each also needs its cluster
bus port, ``port + 10000``, free), joined with ``redis-cli --cluster create ... --cluster-replicas
1 --cluster-yes``. ``--cluster-node-timeout`` is short (1000 ms) so a dead primary's replica takes
over in a second or two. Everything lives in one temporary directory, removed by ``close``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.redis_server import free_port

NODE_TIMEOUT_MS = 1_000


def _bus_port_free(port: int) -> bool:
    if port + 10_000 > 65_535:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port + 10_000))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """``count`` distinct free ports whose cluster bus ports are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and _bus_port_free(port):
            ports.append(port)
    return ports


def _cli(port: int, *args: str, timeout: float = 5.0, auth: Sequence[str] = ()) -> str:
    result = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *auth, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.stdout


class RedisClusterProcesses:
    """Owns the six processes; ``kill_node`` stops one outright (SIGKILL) for failover tests."""

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        acl_user: tuple[str, str] | None = None,
    ) -> None:
        """``acl_user`` = ``(name, password)``: that ACL user may do everything, and the default
        user is switched off, so a client without those credentials is refused (replicas need
        ``masteruser``, so an ACL cluster has none here)."""
        if acl_user is not None and replicas_per_primary:
            raise ValueError("an ACL cluster is started without replicas")
        self.acl_user = acl_user
        self._auth: tuple[str, ...] = (
            ()
            if acl_user is None
            else ("--user", acl_user[0], "--pass", acl_user[1], "--no-auth-warning")
        )
        for binary in ("redis-server", "redis-cli"):
            if shutil.which(binary) is None:
                raise RuntimeError(f"{binary} is not on PATH")
        self.replicas_per_primary = replicas_per_primary
        self.ports = cluster_ports(primaries * (1 + replicas_per_primary))
        self._dir = Path(tempfile.mkdtemp(prefix="game-api-redis-cluster-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    # -- addresses -----------------------------------------------------------------------------

    @property
    def seeds(self) -> str:
        """The ``REDIS_CLUSTER_NODES`` value: every node's ``host:port``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @property
    def seed_pairs(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.ports]

    def primaries(self) -> list[int]:
        """Ports of the nodes that are primaries now (asked of a live node)."""
        for port in self.live_ports():
            text = _cli(port, "CLUSTER", "NODES", auth=self._auth)
            found = [
                int(fields[1].split("@")[0].rsplit(":", 1)[1])
                for fields in (line.split() for line in text.splitlines())
                if len(fields) > 2 and "master" in fields[2].split(",")
                and "fail" not in fields[2] and "fail?" not in fields[2]
            ]  # fmt: skip
            if found:
                return sorted(found)
        return []

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        for port in self.ports:
            node_dir = self._dir / str(port)
            node_dir.mkdir()
            self.processes[port] = subprocess.Popen(
                [
                    "redis-server",
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(node_dir),
                    *self._acl_args(),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while _cli(port, "PING", auth=self._auth).strip() != "PONG":
                self._check_alive(deadline)
                time.sleep(0.05)
        created = subprocess.run(
            [
                "redis-cli", *self._auth, "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", str(self.replicas_per_primary),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-500:]}")
        self.wait_until_ok(deadline - time.monotonic())

    def _acl_args(self) -> list[str]:
        if self.acl_user is None:
            return []
        name, password = self.acl_user
        # redis-server joins the words after an option into its config line: one word each.
        return [
            "--user",
            name,
            "on",
            f">{password}",
            "~*",
            "&*",
            "+@all",
            "--user",
            "default",
            "off",
        ]

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok``, the primaries are all there, and
        every replica's link to its primary is up (a replica that never synced refuses to take
        over: its data is "too old")."""
        deadline = time.monotonic() + timeout
        while True:
            states = [_cli(port, "CLUSTER", "INFO", auth=self._auth) for port in self.live_ports()]
            if states and all("cluster_state:ok" in state for state in states):
                expected = len(self.ports) // (1 + self.replicas_per_primary)
                if len(self.primaries()) == expected and self._replicas_in_sync():
                    return
            self._check_alive(deadline)
            time.sleep(0.05)

    def _replicas_in_sync(self) -> bool:
        for port in self.live_ports():
            info = _cli(port, "INFO", "replication", auth=self._auth)
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    def _check_alive(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise RuntimeError("the Redis cluster did not become ready in time")

    def kill_node(self, port: int) -> None:
        """SIGKILL one node: no goodbye to its clients or its peers."""
        process = self.processes[port]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def __enter__(self) -> RedisClusterProcesses:
        """Started, or stopped again if it could not start (no node outlives a failed start)."""
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        shutil.rmtree(self._dir, ignore_errors=True)
