"""A revocation is final when it returns: once revoke answers 200, no request sent afterwards is
admitted with that key by any worker of any host, for every cache backend, also when one host
is partitioned from Redis or from the database, or one worker is frozen through the revoke.

Each case: two fresh hosts (A and B, two workers each, see ``tests/multihost/__init__.py``);
a victim key and a valid key created and primed on every worker; one fault applied; the victim
revoked over HTTP on host A while background threads keep sending both keys to both hosts on
fresh connections; the load goes on for a few seconds after the revoke returned and until every
reachable worker has answered. The verdicts:

* 0 victim requests SENT after the revoke returned were admitted (200), on any host or worker;
* the revoke itself answered 200 (within ``REVOKE_TIMEOUT``), except in the case built to make
  the client give up, where the reference point is the moment ``GET /v1/keys`` shows the key
  revoked, i.e. the database has committed it;
* the valid key never got 401, and got only 200 on a host that can reach a source of truth.

Run with ``-s`` to see one line of figures per case (revoke status and latency, the
``cache_invalidation`` body, admitted-after counts per host). Several cases fail until
revocation has a mechanism that survives partitions; that is what this suite is for.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator

import pytest

from tests.support.multihost import (
    LEASE_SECONDS,
    POLL_MS,
    Cluster,
    Host,
    LoadGenerator,
    RevokeOutcome,
    Sample,
    admitted_after,
    create_key_over_http,
    outcome_counts,
    revoke_over_http,
    running_cluster,
    sent_after,
    wait_until_listed_revoked,
    workers_answering,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BACKENDS = ("memory", "redis", "tiered")
REVOKE_TIMEOUT = 15.0  # a revoke may wait on a partitioned store; it must still answer
# The client of the "revoke times out" case gives up long before the server is done.
IMPATIENT_CLIENT_TIMEOUT = 0.01
PROBE_SECONDS = 2.5  # probing after the reference point (after the thaw, when frozen)
COVERAGE_DEADLINE = 15.0  # ... and until every reachable worker answered, at most this long


class Scenario(enum.Enum):
    HEALTHY = "healthy"
    B_CUT_FROM_REDIS = "B-cut-from-redis"
    B_REDIS_HUNG = "B-redis-hung"
    A_CUT_FROM_REDIS = "A-cut-from-redis"
    B_CUT_FROM_DB = "B-cut-from-db"
    B_WORKER_FROZEN = "B-worker-frozen"
    REVOKE_TIMES_OUT = "revoke-times-out"


@pytest.fixture(scope="module")
def cluster(postgres_url: str) -> Iterator[Cluster]:
    """One redis-server and one PostgreSQL database for the module: every case has fresh hosts
    and a Redis key prefix of its own, and its keys are new, so nothing leaks between cases."""
    with running_cluster(postgres_url) as started:
        yield started


def apply_fault(scenario: Scenario, a: Host, b: Host) -> int | None:
    """Put the fault in place; returns the pid of the frozen worker, if any."""
    if scenario is Scenario.B_CUT_FROM_REDIS:
        b.redis_link.cut()
    elif scenario is Scenario.B_REDIS_HUNG:
        b.redis_link.hang()
    elif scenario is Scenario.A_CUT_FROM_REDIS:
        a.redis_link.cut()
    elif scenario is Scenario.B_CUT_FROM_DB:
        b.db_link.cut()
    elif scenario is Scenario.B_WORKER_FROZEN:
        frozen = b.worker_pids()[0]
        b.freeze(frozen)
        return frozen
    elif scenario is Scenario.REVOKE_TIMES_OUT:
        # The revoke commits, then its Redis writes wait out the socket timeout: the client,
        # more impatient still, has given up by then and cannot know the outcome.
        a.redis_link.hang()
    return None


def report(
    backend: str,
    scenario: Scenario,
    outcome: RevokeOutcome,
    since: float,
    samples: list[Sample],
    hosts: list[Host],
) -> None:
    per_host = {
        host.name: {
            "victim": outcome_counts(
                s for s in sent_after(samples, "victim", since) if s.host == host.name
            ),
            "valid": outcome_counts(
                s for s in sent_after(samples, "valid", since) if s.host == host.name
            ),
        }
        for host in hosts
    }
    admits = admitted_after(samples, "victim", since)
    print(
        f"\n[{backend:6} {scenario.value:18}] revoke={outcome.status} "
        f"latency={outcome.latency:.3f}s error={outcome.error!r} "
        f"reference=+{since - (outcome.returned_at - outcome.latency):.3f}s after sending it\n"
        f"    cache_invalidation={json.dumps(outcome.cache_invalidation)}\n"
        f"    admitted-after={len(admits)} "
        f"(by host/worker: {sorted({(s.host, s.worker) for s in admits})})\n"
        f"    after the reference point, per host: {json.dumps(per_host)}"
    )


@pytest.mark.parametrize("scenario", list(Scenario), ids=lambda s: s.value)
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_request_is_admitted_after_revoke_returns(
    cluster: Cluster, backend: str, scenario: Scenario
) -> None:
    with cluster.hosts(backend) as (a, b):
        victim = create_key_over_http(a, "victim")
        valid = create_key_over_http(a, "bystander")
        workers = {host.name: set[str]() for host in (a, b)}
        for host in (a, b):
            for key in (victim, valid):
                workers[host.name] |= host.prime(key.key)

        load = LoadGenerator([a, b], {"victim": victim.key, "valid": valid.key})
        with load:
            frozen = apply_fault(scenario, a, b)
            if scenario is Scenario.REVOKE_TIMES_OUT:
                outcome = revoke_over_http(a, victim.prefix, timeout=IMPATIENT_CLIENT_TIMEOUT)
                # The client gave up and cannot know the outcome; the revocation committed all
                # the same. The log alone must carry it everywhere within a lease and a poll
                # of the commit — no retry, no cache needed.
                committed = wait_until_listed_revoked(b, victim.prefix)
                since = committed + LEASE_SECONDS + POLL_MS / 1000
                # And an operator who retries (revoke is idempotent) is told it is final.
                retried = revoke_over_http(a, victim.prefix, timeout=REVOKE_TIMEOUT)
                if (
                    retried.status != 200
                    or retried.body is None
                    or not (retried.body.get("finality", {}).get("final"))
                ):
                    raise AssertionError(f"the retried revoke answered {retried}")
                since = min(since, retried.returned_at)
            else:
                outcome = revoke_over_http(a, victim.prefix, timeout=REVOKE_TIMEOUT)
                since = outcome.returned_at
            if frozen is not None:
                b.thaw(frozen)  # wakes after the revoke returned, and must not admit
            load.run_until(
                since, PROBE_SECONDS, workers, "victim", maximum_seconds=COVERAGE_DEADLINE
            )
        samples = load.samples
        report(backend, scenario, outcome, since, samples, [a, b])

        problems: list[str] = []
        if scenario is not Scenario.REVOKE_TIMES_OUT and outcome.status != 200:
            problems.append(f"revoke answered {outcome.status} ({outcome.error}): {outcome.body}")
        admits = admitted_after(samples, "victim", since)
        if admits:
            problems.append(
                f"{len(admits)} victim requests sent after the revoke returned were admitted, "
                f"the first {admits[0].sent_at - since:.3f}s after, by "
                f"{sorted({(s.host, s.worker) for s in admits})}"
            )
        # Harness validity: 0 admits means something only for workers that were asked.
        wanted = {(host, worker) for host, each in workers.items() for worker in each}
        silent = wanted - workers_answering(samples, "victim", since)
        if silent:
            problems.append(f"workers that never answered after the revoke: {sorted(silent)}")
        for host in (a, b):
            statuses = {
                s.status
                for s in sent_after(samples, "valid", since)
                if s.host == host.name and s.status is not None
            }
            allowed = {200} if host.has_source_of_truth(backend) else {200, 503}
            if 401 in statuses:
                problems.append(f"the valid key got 401 on host {host.name}")
            if not statuses <= allowed:
                problems.append(f"the valid key got {sorted(statuses)} on host {host.name}")
            if host.has_source_of_truth(backend) and 200 not in statuses:
                problems.append(f"the valid key was never admitted on host {host.name}")
        assert not problems, "\n".join(problems)
