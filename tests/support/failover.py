"""What the failover tests share: hosts that reach a Sentinel set or a Cluster directly, and the
three figures they report.

A ``DirectHost`` is one ``game-api serve --workers 2`` whose Redis settings name the topology
(``REDIS_TOPOLOGY=sentinel`` with ``REDIS_SENTINELS``, or ``cluster`` with
``REDIS_CLUSTER_NODES``) and whose ``DATABASE_URL`` is the shared PostgreSQL database. No proxy
sits in between: the fault is in Redis itself (a failover, a killed node), and the service must
follow it on its own, without a restart.

The figures, computed from the ``LoadGenerator``'s samples:

* ``longest_failure_window`` — per host, the longest run of valid-key requests that failed
  (any answer but 200, or no answer) with no success on that host in between, from the first
  one's sending to the last one's answer; the largest over the hosts. Zero when none failed.
* admits after a revoke returned — ``admitted_after`` from ``tests.support.multihost``.
* cache hits — ``/metrics`` counters of each host (summed over its workers by the service)
  before and after, and the keyspace statistics of the Redis node that now holds the keys.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from tests.support.live_server import LiveServer
from tests.support.multihost import (
    CACHE_TTL_SECONDS,
    LEASE_SECONDS,
    POLL_MS,
    WORKERS_PER_HOST,
    Sample,
    _run_side_by_side,
)


class DirectHost:
    """One ``game-api serve`` reaching Redis (any topology) and PostgreSQL directly."""

    def __init__(
        self,
        name: str,
        *,
        admin_key: str,
        backend: str,
        database_url: str,
        redis_env: Mapping[str, str],
        key_prefix: str,
        workers: int = WORKERS_PER_HOST,
    ) -> None:
        self.name = name
        self.admin_key = admin_key
        env = {
            "APIKEY_CACHE_BACKEND": backend,
            "DATABASE_URL": database_url,
            "APIKEY_CACHE_REDIS_KEY_PREFIX": key_prefix,
            "APIKEY_CACHE_TTL_SECONDS": str(CACHE_TTL_SECONDS),
            "APIKEY_CACHE_L1_TTL_SECONDS": str(CACHE_TTL_SECONDS),
            "APIKEY_LEASE_SECONDS": str(LEASE_SECONDS),
            "APIKEY_REVOCATION_POLL_MS": str(POLL_MS),
            **redis_env,
        }
        self.server = LiveServer(env, workers=workers)

    @property
    def port(self) -> int:
        return self.server.port

    def prime(self, api_key: str) -> set[str]:
        """Until every worker has answered 200 for ``api_key`` (and so cached it)."""
        return self.server.prime_every_worker(api_key)

    def counters(self) -> dict[str, float]:
        """This host's cache counters from ``/metrics`` (the sum over its workers)."""
        response = self.server.get("/metrics")
        if response.status_code != 200:
            raise AssertionError(f"/metrics on {self.name}: {response.status_code}")
        return cache_counters(response.text)


@contextlib.contextmanager
def direct_hosts(
    backend: str,
    *,
    admin_key: str,
    database_url: str,
    redis_env: Mapping[str, str],
    names: Sequence[str] = ("A", "B"),
) -> Iterator[tuple[list[DirectHost], str]]:
    """Hosts started side by side with a Redis key prefix of their own (yielded with them);
    all stopped on exit, also on failure."""
    key_prefix = f"failover:{uuid.uuid4().hex[:12]}:"
    hosts = [
        DirectHost(
            name,
            admin_key=admin_key,
            backend=backend,
            database_url=database_url,
            redis_env=redis_env,
            key_prefix=key_prefix,
        )
        for name in names
    ]
    try:
        _run_side_by_side([host.server.start for host in hosts])
        yield hosts, key_prefix
    finally:
        _run_side_by_side([host.server.close for host in hosts])


# -- /metrics ---------------------------------------------------------------------------------

_SAMPLE_LINE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def cache_counters(metrics_text: str) -> dict[str, float]:
    """``hits_process``, ``hits_shared``, ``misses`` and ``repository_lookups`` from the
    Prometheus text (``game_api_cache_lookups_total`` by tier and result)."""
    counters = {"hits_process": 0.0, "hits_shared": 0.0, "misses": 0.0, "repository_lookups": 0.0}
    for line in metrics_text.splitlines():
        match = _SAMPLE_LINE.match(line)
        if match is None:
            continue
        name, labels, value = match["name"], match["labels"] or "", float(match["value"])
        if name == "game_api_cache_lookups_total":
            if 'result="hit"' in labels:
                tier = "process" if 'tier="process"' in labels else "shared"
                counters[f"hits_{tier}"] += value
            elif 'result="miss"' in labels:
                counters["misses"] += value
        elif name == "game_api_repository_lookups_total":
            counters["repository_lookups"] += value
    return counters


def counter_growth(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


# -- the failure window -------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureWindow:
    """The longest run of failed valid requests on one host (see the module docstring)."""

    host: str
    seconds: float
    failed: int
    started_at: float  # time.monotonic() of the first failed request's sending


NO_FAILURE = FailureWindow(host="-", seconds=0.0, failed=0, started_at=0.0)


def longest_failure_window(samples: Iterable[Sample], labels: Iterable[str]) -> FailureWindow:
    """The longest window over every host; ``NO_FAILURE`` when every valid request got 200."""
    wanted = set(labels)
    by_host: dict[str, list[Sample]] = {}
    for sample in samples:
        if sample.label in wanted:
            by_host.setdefault(sample.host, []).append(sample)
    longest = NO_FAILURE
    for host, host_samples in by_host.items():
        run: list[Sample] = []
        # A run ends at the first success *sent* after it began: order by sending time.
        for sample in [*sorted(host_samples, key=lambda s: s.sent_at), None]:
            if sample is not None and sample.status != 200:
                run.append(sample)
                continue
            if run:
                window = FailureWindow(
                    host=host,
                    seconds=max(s.answered_at for s in run) - run[0].sent_at,
                    failed=len(run),
                    started_at=run[0].sent_at,
                )
                if window.seconds > longest.seconds:
                    longest = window
                run = []
    return longest


def failed(samples: Iterable[Sample], labels: Iterable[str]) -> list[Sample]:
    wanted = set(labels)
    return [s for s in samples if s.label in wanted and s.status != 200]
