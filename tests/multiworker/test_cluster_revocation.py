"""A revocation is final when it returns, on a Redis Cluster too: the real ``game-api serve
--workers 3`` with the tiered backend on the session's 3-primary cluster and PostgreSQL.

Both keys are primed on every worker (each holds them in its L1), then sent continuously on fresh
connections while the victim is revoked over HTTP. Verdicts: the revoke answers 200 and says it
is final; 0 victim requests sent after it returned are admitted, by any worker; the valid key is
never refused. The invalidation travels on the sharded channel (``SPUBLISH``), the workers'
acknowledgements are matched against the members registry in PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.cluster_host import ClusterHost, create_key, tiered_cluster_host
from tests.support.multihost import (
    LoadGenerator,
    admitted_after,
    outcome_counts,
    revoke_over_http,
    sent_after,
)
from tests.support.redis_cluster import RedisClusterProcesses

pytestmark = [pytest.mark.slow, pytest.mark.redis_server, pytest.mark.postgres]

WORKERS = 3
REVOKE_TIMEOUT = 15.0
PROBE_SECONDS = 2.5
CACHE_TTL_SECONDS = 60  # far past the probing: an admit would be a missed invalidation


@pytest.fixture
def host(
    postgres_url: str, redis_cluster: RedisClusterProcesses, key_prefix: str
) -> Iterator[ClusterHost]:
    with tiered_cluster_host(
        postgres_url,
        redis_cluster,
        key_prefix,
        workers=WORKERS,
        cache_ttl_seconds=CACHE_TTL_SECONDS,
    ) as host:
        yield host


def test_no_request_is_admitted_after_revoke_returns_on_a_cluster(host: ClusterHost) -> None:
    ready = host.server.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok", ready.text
    victim = create_key(host, "victim")
    valid = create_key(host, "bystander")
    workers = host.server.prime_every_worker(victim["key"])
    assert len(workers) == WORKERS
    assert len(host.server.prime_every_worker(valid["key"])) == WORKERS

    with LoadGenerator(
        [host],  # type: ignore[list-item]
        {"victim": victim["key"], "valid": valid["key"]},
    ) as load:
        outcome = revoke_over_http(host, victim["prefix"], REVOKE_TIMEOUT)  # type: ignore[arg-type]
        load.run_until(outcome.returned_at, PROBE_SECONDS, {host.name: workers}, "victim")
    samples = load.samples

    admits = admitted_after(samples, "victim", outcome.returned_at)
    valid_after = sent_after(samples, "valid", outcome.returned_at)
    finality = None if outcome.body is None else outcome.body.get("finality")
    victim_after = sent_after(samples, "victim", outcome.returned_at)
    print(
        f"\n[tiered on a 3-primary cluster, {WORKERS} workers] revoke={outcome.status} "
        f"latency={outcome.latency:.3f}s\n"
        f"    cache_invalidation={json.dumps(outcome.cache_invalidation)}\n"
        f"    finality={json.dumps(finality)}\n"
        f"    victim after revoke: {outcome_counts(victim_after)} admitted={len(admits)}; "
        f"valid after revoke: {outcome_counts(valid_after)}"
    )
    assert outcome.status == 200, outcome
    assert outcome.body is not None and outcome.body["finality"]["final"] is True
    assert admits == [], sorted({(s.worker, s.status) for s in admits})
    answered = {s.worker for s in victim_after}
    assert answered >= workers, "not every worker was probed after the revoke"
    assert valid_after and all(s.status == 200 for s in valid_after), outcome_counts(valid_after)
