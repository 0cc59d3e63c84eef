"""Redis Sentinel failing over under traffic: valid keys keep working, revoked keys stay revoked,
and the cache is used again on the new primary — without restarting the service.

The deployment: a ``SentinelSet`` (one primary, one replica, three sentinels; see
``tests/support/redis_sentinel.py``), one throw-away PostgreSQL database, and two hosts (A and
B, ``game-api serve --workers 2`` each, ``REDIS_TOPOLOGY=sentinel``) reaching both directly.
Background threads send several valid keys and three victim keys to both hosts on fresh
connections throughout. Then, in order:

1. ``SENTINEL FAILOVER``; as soon as the replica answers ``role:master`` (the sentinels may
   not have switched yet, and the old primary still thinks it is one), victim ``switch`` is
   revoked on host A. Sentinel turns the old primary into a replica of the new one only about
   ten seconds later; until then it is a second primary that pooled connections keep using. A
   burst of concurrent requests on each host makes the workers open more connections, which go
   to the new primary, so both take reads and writes; then victim ``split`` is revoked on host
   B. Then until the old primary has re-joined as a replica (it resynchronises from the new
   one, discarding what was written to it meanwhile).
2. The new primary is killed outright (SIGKILL); while nothing answers as primary, victim
   ``outage`` is revoked on host B.
3. Once the sentinels have promoted the remaining node, victim ``after`` is revoked on host A,
   and the load goes on for a few seconds and until every worker has answered every victim.

The figures, one line each (run with ``-s``), and what is asserted:

* the longest window of failed valid requests on a host: at most ``FAILURE_WINDOW_BOUND`` (2 s)
  (and no valid key is ever refused with 401);
* for each victim, the requests sent after its revoke returned that were admitted: 0, on
  every worker of both hosts (and the revoke answered 200);
* cache hits on the new primary: each host's ``/metrics`` hit counters grow after the last
  failover, the new primary's ``keyspace_hits`` grow and it holds entries under the
  deployment's prefix; for ``tiered``, every worker's invalidation listener is subscribed on it.

Run: ``.venv/bin/pytest tests/multihost/test_sentinel_failover.py -s`` (slow; about 40 s per
backend).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

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
    one_request,
)
from tests.support.redis_sentinel import SentinelSet

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis_server]

WARM_UP_SECONDS = 1.0
PROBE_SECONDS = 3.0  # load after the last revoke, and until every worker answered each victim
COVERAGE_DEADLINE = 15.0
VALID_LABELS = ("valid-1", "valid-2", "valid-3")
VICTIMS = ("switch", "split", "outage", "after")
BURST_REQUESTS = 24  # per host
BURST_CONCURRENCY = 16
SPLIT_LOAD_SECONDS = 1.0


@dataclass(frozen=True)
class Database:
    url: str
    admin_key: str


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[Database]:
    """One PostgreSQL database for the module; each case has its own hosts, keys and prefix."""
    with temporary_postgres_database(postgres_url) as url:
        admin = create_key_with_cli(url, "failover-admin", ["admin", "read", "write"])
        yield Database(url=url, admin_key=admin.key)


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    """A fresh set per case: each case fails it over twice and kills a node."""
    redis = SentinelSet()
    redis.start()
    try:
        yield redis
    finally:
        redis.close()


def burst(targets: list[tuple[DirectHost, Key]]) -> None:
    """Many requests at once on every host (each worker then needs more Redis connections)."""

    def one(target: tuple[DirectHost, Key]) -> int | None:
        host, key = target
        status, _worker, _error = one_request(host.port, key.key, timeout=5.0)
        return status

    with concurrent.futures.ThreadPoolExecutor(BURST_CONCURRENCY) as pool:
        statuses = list(pool.map(one, targets * BURST_REQUESTS))
    assert set(statuses) == {200}, f"a valid key got {sorted(set(statuses), key=str)} in the burst"


@pytest.mark.parametrize("backend", ["tiered", "redis"])
def test_sentinel_failover_under_traffic(
    database: Database, sentinel_set: SentinelSet, backend: str
) -> None:
    redis = sentinel_set
    redis_env = {
        "REDIS_TOPOLOGY": "sentinel",
        "REDIS_SENTINELS": redis.sentinel_addresses,
        "REDIS_SENTINEL_SERVICE": redis.service_name,
    }
    tag = f"[sentinel {backend}]"
    with direct_hosts(
        backend, admin_key=database.admin_key, database_url=database.url, redis_env=redis_env
    ) as (hosts, key_prefix):
        a, b = hosts
        valid = {label: create_key_over_http(a, label) for label in VALID_LABELS}
        victims = {label: create_key_over_http(a, f"victim-{label}") for label in VICTIMS}
        workers = {host.name: set[str]() for host in hosts}
        for host in hosts:
            for key in [*valid.values(), *victims.values()]:
                workers[host.name] |= host.prime(key.key)
        keys = {label: key.key for label, key in [*valid.items(), *victims.items()]}

        load = LoadGenerator(hosts, keys)
        revoked: dict[str, RevokeOutcome] = {}
        with load:
            started = time.monotonic()
            load.run_until(started, WARM_UP_SECONDS, {}, VALID_LABELS[0])

            # 1. A forced failover; revoke while the old primary still acts as one.
            old_primary = redis.current_primary()
            candidate = redis.initial_replica
            failover_sent = time.monotonic()
            redis.start_failover()
            redis.wait_promoted(candidate)
            promoted_at = time.monotonic()
            revoked["switch"] = revoke(a, victims["switch"])
            first_new = redis.wait_for_new_primary(old_primary)
            switched_at = time.monotonic()
            assert first_new == candidate
            # A burst of concurrent requests makes the workers open connections, which go to
            # the new primary, while the pooled ones still reach the old: both now take reads
            # and writes. Revoke then.
            hits_before = {p: redis.keyspace_hits(p) for p in (old_primary, first_new)}
            burst([(a, valid["valid-1"]), (b, valid["valid-2"])])
            load.run_until(time.monotonic(), SPLIT_LOAD_SECONDS, {}, VALID_LABELS[0])
            split_hits = {p: redis.keyspace_hits(p) - hits_before[p] for p in hits_before}
            split_revoked_at = time.monotonic()
            revoked["split"] = revoke(b, victims["split"])
            assert redis.role_of(old_primary) == "master", "the split ended before the revoke"
            redis.wait_demoted(old_primary)
            demoted_at = time.monotonic()
            redis.wait_replica_of(first_new, old_primary)
            rejoined_at = time.monotonic()

            # 2. The new primary dies; revoke while nothing answers as primary.
            stats_before = redis.info(old_primary, "stats")
            killed = redis.kill_primary()
            killed_at = time.monotonic()
            revoked["outage"] = revoke(b, victims["outage"])
            last_primary = redis.wait_for_new_primary(killed)
            assert last_primary == old_primary
            replaced_at = time.monotonic()
            counters_before = {host.name: host.counters() for host in hosts}

            # 3. Revoke once the new primary is in place, and keep probing.
            revoked["after"] = revoke(a, victims["after"])
            for label in VICTIMS:
                load.run_until(
                    revoked["after"].returned_at,
                    PROBE_SECONDS,
                    workers,
                    label,
                    maximum_seconds=COVERAGE_DEADLINE,
                )
            subscribers = (
                redis.wait_subscribers(
                    last_primary,
                    key_prefix + "invalidate",
                    sum(len(each) for each in workers.values()),
                )
                if backend == "tiered"
                else None
            )
            counters_after = {host.name: host.counters() for host in hosts}
        samples = load.samples
        stats_after = redis.info(last_primary, "stats")
        entries_on_new_primary = redis.count_keys(last_primary, key_prefix + "*")
        # What a process started now would find: every victim's shared entry a tombstone.
        shared = {
            label: decode_value(redis.value(last_primary, key_prefix + digest(key.key)))
            for label, key in victims.items()
        }

    # -- figures and verdicts -----------------------------------------------------------------
    print(
        f"\n{tag} timeline: promoted +{promoted_at - failover_sent:.2f}s after SENTINEL "
        f"FAILOVER, sentinels switched +{switched_at - failover_sent:.2f}s, old primary still "
        f"acting as primary until +{demoted_at - failover_sent:.2f}s (keyspace hits in between "
        f"after a burst: old {split_hits[old_primary]}, new {split_hits[first_new]}; victim "
        f"split revoked at +{split_revoked_at - failover_sent:.2f}s), "
        f"re-joined as replica "
        f"+{rejoined_at - failover_sent:.2f}s; killed primary replaced after "
        f"{replaced_at - killed_at:.2f}s"
    )
    cache = CacheUse(
        growth={
            name: counter_growth(counters_before[name], counters_after[name]) for name in workers
        },
        keyspace_hits=int(stats_after["keyspace_hits"]) - int(stats_before["keyspace_hits"]),
        entries=entries_on_new_primary,
        subscribers=subscribers,
        expected_subscribers=sum(len(each) for each in workers.values()),
        not_tombstones=sorted(label for label, v in shared.items() if v is None or v.active),
    )
    problems = report_and_judge(
        tag,
        backend,
        samples,
        VALID_LABELS,
        {
            "switch": ("during the forced failover", revoked["switch"]),
            "split": ("while two nodes acted as primary", revoked["split"]),
            "outage": ("during the failover of the killed primary", revoked["outage"]),
            "after": ("after the failovers", revoked["after"]),
        },
        workers,
        cache,
    )
    assert not problems, "\n".join(problems)
