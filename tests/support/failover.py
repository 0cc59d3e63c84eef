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
    WORKERS_PER_HOST,
    Key,
    RevokeOutcome,
    Sample,
    ServingHost,
    _run_side_by_side,
    admitted_after,
    outcome_counts,
    revoke_over_http,
    sent_after,
    workers_answering,
)

POLL_MS = 1_000


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
            # The default poll: a process that has not applied a revocation yet may act on
            # what Redis says for up to this long, so that is the window a lost tombstone opens.
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


# -- the report and the verdicts shared by the failover tests -----------------------------------

FAILURE_WINDOW_BOUND = 2.0  # seconds: the target for valid requests failing at all
REVOKE_TIMEOUT = 15.0


def revoke(host: ServingHost, key: Key) -> RevokeOutcome:
    """Revoke over HTTP; anything but 200 in time fails the test at once."""
    outcome = revoke_over_http(host, key.prefix, timeout=REVOKE_TIMEOUT)
    if outcome.status != 200:
        raise AssertionError(f"revoking on {host.name} answered {outcome}")
    return outcome


def describe_revoke(outcome: RevokeOutcome) -> str:
    finality = (outcome.body or {}).get("finality") or {}
    return (
        f"revoke {outcome.status} in {outcome.latency:.3f}s, "
        f"final by {finality.get('how')!r} ({finality.get('acknowledged')}/"
        f"{finality.get('expected')})"
    )


@dataclass
class CacheUse:
    """Evidence that the cache answers again after the failover, without a restart."""

    growth: Mapping[str, Mapping[str, float]]  # per host: counter_growth of its /metrics
    keyspace_hits: int  # on the node that took over, since before it did
    entries: int  # under the deployment's prefix, on that node
    subscribers: int | None  # tiered: invalidation listeners subscribed on it
    expected_subscribers: int  # tiered: one per worker of every host
    not_tombstones: list[str]  # victims whose shared entry there is not a tombstone


def report_and_judge(
    tag: str,
    backend: str,
    samples: Sequence[Sample],
    valid_labels: Sequence[str],
    revoked: Mapping[str, tuple[str, RevokeOutcome]],
    workers: Mapping[str, set[str]],
    cache: CacheUse,
) -> list[str]:
    """Print the three figures, one line each, and return what breaks the promises.

    ``revoked`` maps each victim's label to (when it was revoked, in words; the outcome).
    """
    window = longest_failure_window(samples, valid_labels)
    valid_samples = [s for s in samples if s.label in valid_labels]
    failures = failed(samples, valid_labels)
    slowest = max((s.answered_at - s.sent_at for s in valid_samples), default=0.0)
    print(
        f"{tag} failed valid requests: {len(failures)} of {len(valid_samples)} "
        f"({outcome_counts(failures)}); longest failure window {window.seconds:.3f}s "
        f"on host {window.host} ({window.failed} requests; bound {FAILURE_WINDOW_BOUND:.1f}s); "
        f"slowest valid answer {slowest:.3f}s"
    )
    problems: list[str] = []
    if any(s.status == 401 for s in valid_samples):
        problems.append("a valid key was refused with 401")
    if window.seconds > FAILURE_WINDOW_BOUND:
        problems.append(
            f"valid requests failed for {window.seconds:.3f}s on host {window.host} "
            f"(> {FAILURE_WINDOW_BOUND}s)"
        )
    wanted = {(host, worker) for host, each in workers.items() for worker in each}
    for label, (when, outcome) in revoked.items():
        since = outcome.returned_at
        admitted = admitted_after(samples, label, since)
        asked = sent_after(samples, label, since)
        print(
            f"{tag} revoked {when} ({label}): {len(admitted)} admitted of {len(asked)} "
            f"requests sent after the revoke returned ({outcome_counts(asked)}); "
            f"{describe_revoke(outcome)}"
        )
        if admitted:
            problems.append(
                f"{len(admitted)} requests with victim {label} were admitted after its revoke "
                f"returned, the first {admitted[0].sent_at - since:.3f}s after, by "
                f"{sorted({(s.host, s.worker) for s in admitted})}"
            )
        silent = wanted - workers_answering(samples, label, since)
        if silent:
            problems.append(f"workers that never answered {label} after its revoke: {silent}")
    print(
        f"{tag} cache hits after the failover: "
        + "; ".join(
            f"host {name} +{g['hits_process']:.0f} process +{g['hits_shared']:.0f} shared "
            f"(+{g['repository_lookups']:.0f} database lookups)"
            for name, g in cache.growth.items()
        )
        + f"; new primary keyspace_hits +{cache.keyspace_hits}, {cache.entries} entries under "
        "the prefix"
        + (
            f", {cache.subscribers} invalidation subscribers"
            if cache.subscribers is not None
            else ""
        )
        + f"; victims without a tombstone there: {len(cache.not_tombstones)} of {len(revoked)}"
    )
    for name, g in cache.growth.items():
        if g["hits_process"] + g["hits_shared"] <= 0:
            problems.append(f"host {name} had no cache hit after the failover")
        if backend == "tiered" and g["hits_process"] <= 0:
            problems.append(f"host {name}'s local tier was not trusted again")
    if cache.keyspace_hits <= 0 or cache.entries <= 0:
        problems.append("the new primary was not used as the cache")
    if cache.subscribers is not None and cache.subscribers < cache.expected_subscribers:
        problems.append(
            f"{cache.subscribers} of {cache.expected_subscribers} invalidation listeners "
            "subscribed on the new primary"
        )
    if cache.not_tombstones:
        problems.append(f"no tombstone on the new primary for {cache.not_tombstones}")
    return problems
