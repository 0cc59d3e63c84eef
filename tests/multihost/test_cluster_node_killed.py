"""A Redis Cluster primary killed under traffic: valid keys keep working, revoked keys stay
revoked, and the cache is used again once its replica has taken over — without a restart.

The deployment: a 3-primary, 3-replica cluster (``tests/support/redis_cluster.py``, node timeout
1 s), one throw-away PostgreSQL database, and two hosts (A and B, ``game-api serve --workers 2``
each, ``REDIS_TOPOLOGY=cluster`` with every node as a seed) reaching both directly. The primary
that is killed is the one that matters most: it owns the slot of the tiered invalidation channel
(``<prefix>{invalidate}``), of one of the valid keys, and of both victims' entries.

Background threads send the valid keys and the victims to both hosts on fresh connections
throughout. Then: that primary is killed (SIGKILL); at once, while its slots have no owner,
victim ``outage`` is revoked on host B; once the cluster says ``cluster_state:ok`` again (the
replica promoted), victim ``after`` is revoked on host A, and the load goes on for a few
seconds and until every worker has answered every victim.

The figures, one line each (run with ``-s``), and what is asserted, as in
``test_sentinel_failover.py``: the longest window of failed valid requests on a host, at most
2 s (no valid key ever refused with 401); 0 requests admitted with a victim after its revoke
returned, on every worker; each host's ``/metrics`` cache hits grow after the failover, the
promoted node's ``keyspace_hits`` grow and it holds entries under the prefix and both victims'
tombstones; for ``tiered``, every worker's sharded listener is subscribed on it.

Run: ``.venv/bin/pytest tests/multihost/test_cluster_node_killed.py -s`` (slow; about 30 s per
backend).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from app.domain.keys import digest
from app.services.redis_cache_backend import decode_value
from tests.support.databases import temporary_postgres_database
from tests.support.failover import (
    CacheUse,
    DirectHost,
    counter_growth,
    direct_hosts,
    report_and_judge,
    revoke,
)
from tests.support.multihost import (
    Key,
    LoadGenerator,
    RevokeOutcome,
    create_key_over_http,
    create_key_with_cli,
)
from tests.support.redis_cluster import RedisClusterProcesses

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis_server]

WARM_UP_SECONDS = 1.0
PROBE_SECONDS = 3.0
COVERAGE_DEADLINE = 15.0
MAX_KEYS_TO_PLACE = 40  # creating keys until the doomed primary holds the ones it must hold


@dataclass(frozen=True)
class Database:
    url: str
    admin_key: str


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[Database]:
    with temporary_postgres_database(postgres_url) as url:
        admin = create_key_with_cli(url, "cluster-failover-admin", ["admin", "read", "write"])
        yield Database(url=url, admin_key=admin.key)


@pytest.fixture
def cluster() -> Iterator[RedisClusterProcesses]:
    """A fresh cluster per case: each case kills one of its primaries."""
    with RedisClusterProcesses() as processes:
        yield processes


# -- looking at the cluster from outside ------------------------------------------------------


def node(port: int) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=2,
        socket_connect_timeout=2,
        decode_responses=True,
    )


def cluster_nodes(port: int) -> list[dict[str, Any]]:
    """``CLUSTER NODES`` of the node on ``port``: port, id, flags, its primary's id, slots."""
    # redis-cli's raw answer: redis-py reshapes CLUSTER NODES into a dict of its own.
    text = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "CLUSTER", "NODES"],
        capture_output=True,
        text=True,
        timeout=5,
        check=True,
    ).stdout
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        slots: list[tuple[int, int]] = []
        for spec in fields[8:]:
            if spec.startswith("["):
                continue  # a slot being migrated
            low, _, high = spec.partition("-")
            slots.append((int(low), int(high or low)))
        nodes.append(
            {
                "id": fields[0],
                "port": int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                "flags": set(fields[2].split(",")),
                "primary_id": fields[3],
                "slots": slots,
            }
        )
    return nodes


def owner_of(port: int, slot: int) -> int:
    for entry in cluster_nodes(port):
        if "master" in entry["flags"] and any(lo <= slot <= hi for lo, hi in entry["slots"]):
            return int(entry["port"])
    raise AssertionError(f"no primary owns slot {slot}")


def replica_of(port: int, primary: int) -> int:
    entries = cluster_nodes(port)
    primary_id = next(e["id"] for e in entries if e["port"] == primary)
    return next(int(e["port"]) for e in entries if e["primary_id"] == primary_id)


def place_keys(
    host: DirectHost, key_prefix: str, doomed: int, seed: int
) -> tuple[dict[str, Key], dict[str, Key]]:
    """Valid keys (one on the doomed primary, two elsewhere) and two victims on it."""
    on_doomed: list[Key] = []
    elsewhere: list[Key] = []
    for index in range(MAX_KEYS_TO_PLACE):
        key = create_key_over_http(host, f"placed-{index}")
        slot = key_slot((key_prefix + digest(key.key)).encode())
        (on_doomed if owner_of(seed, slot) == doomed else elsewhere).append(key)
        if len(on_doomed) >= 3 and len(elsewhere) >= 2:
            break
    else:
        raise AssertionError("could not place keys on the doomed primary")
    valid = {"valid-1": on_doomed[0], "valid-2": elsewhere[0], "valid-3": elsewhere[1]}
    victims = {"outage": on_doomed[1], "after": on_doomed[2]}
    return valid, victims


@pytest.mark.parametrize("backend", ["tiered", "redis"])
def test_cluster_primary_killed_under_traffic(
    database: Database, cluster: RedisClusterProcesses, backend: str
) -> None:
    redis_env = {"REDIS_TOPOLOGY": "cluster", "REDIS_CLUSTER_NODES": cluster.seeds}
    tag = f"[cluster {backend}]"
    seed = cluster.ports[0]
    with direct_hosts(
        backend, admin_key=database.admin_key, database_url=database.url, redis_env=redis_env
    ) as (hosts, key_prefix):
        a, b = hosts
        channel = key_prefix + "{invalidate}"
        doomed = owner_of(seed, key_slot(channel.encode()))
        heir = replica_of(seed, doomed)
        live_seed = next(port for port in cluster.ports if port not in (doomed,))
        valid, victims = place_keys(a, key_prefix, doomed, seed)
        workers = {host.name: set[str]() for host in hosts}
        for host in hosts:
            for key in [*valid.values(), *victims.values()]:
                workers[host.name] |= host.prime(key.key)
        keys = {label: key.key for label, key in [*valid.items(), *victims.items()]}

        load = LoadGenerator(hosts, keys)
        revoked: dict[str, RevokeOutcome] = {}
        with load:
            started = time.monotonic()
            load.run_until(started, WARM_UP_SECONDS, {}, "valid-1")
            with node(heir) as client:
                stats_before = client.info("stats")

            killed_at = time.monotonic()
            cluster.kill_node(doomed)
            revoked["outage"] = revoke(b, victims["outage"])
            wait_owner(live_seed, key_slot(channel.encode()), heir)
            cluster.wait_until_ok()
            replaced_at = time.monotonic()
            counters_before = {host.name: host.counters() for host in hosts}

            revoked["after"] = revoke(a, victims["after"])
            for label in victims:
                load.run_until(
                    revoked["after"].returned_at,
                    PROBE_SECONDS,
                    workers,
                    label,
                    maximum_seconds=COVERAGE_DEADLINE,
                )
            subscribers = (
                wait_shard_subscribers(heir, channel, sum(len(each) for each in workers.values()))
                if backend == "tiered"
                else None
            )
            counters_after = {host.name: host.counters() for host in hosts}
        samples = load.samples
        with node(heir) as client:
            stats_after = client.info("stats")
            entries = sum(1 for _ in client.scan_iter(match=key_prefix + "*", count=1000))
            shared = {
                label: decode_value(client.get(key_prefix + digest(key.key)))
                for label, key in victims.items()
            }

    print(
        f"\n{tag} timeline: primary {doomed} killed, its replica {heir} serving its slots "
        f"after {replaced_at - killed_at:.2f}s (cluster_state:ok everywhere)"
    )
    cache = CacheUse(
        growth={
            name: counter_growth(counters_before[name], counters_after[name]) for name in workers
        },
        keyspace_hits=int(stats_after["keyspace_hits"]) - int(stats_before["keyspace_hits"]),
        entries=entries,
        subscribers=subscribers,
        expected_subscribers=sum(len(each) for each in workers.values()),
        not_tombstones=sorted(label for label, v in shared.items() if v is None or v.active),
    )
    problems = report_and_judge(
        tag,
        backend,
        samples,
        list(valid),
        {
            "outage": ("while the killed primary's slots had no owner", revoked["outage"]),
            "after": ("after its replica took over", revoked["after"]),
        },
        workers,
        cache,
    )
    assert not problems, "\n".join(problems)


def wait_shard_subscribers(port: int, channel: str, at_least: int, timeout: float = 15.0) -> int:
    """Until ``at_least`` clients of the node on ``port`` hold a sharded subscription to
    ``channel`` (polled with a deadline)."""
    deadline = time.monotonic() + timeout
    count = 0
    while True:
        with node(port) as client:
            answer = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        count = int(answer[1]) if len(answer) > 1 else 0
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def wait_owner(port: int, slot: int, expected: int, timeout: float = 30.0) -> None:
    """Until the node on ``port`` names ``expected`` as the primary of ``slot``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            owner: int | None = owner_of(port, slot)
        except AssertionError:
            owner = None  # no owner while the failover is under way
        if owner == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"slot {slot} is owned by {owner}, not {expected}")
        time.sleep(0.05)
