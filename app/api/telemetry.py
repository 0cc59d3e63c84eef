"""Prometheus metrics: what the service counts, and ``GET /metrics`` in the text format.

**One process or many.** Under ``game-api serve`` gunicorn runs several worker processes; a
scrape reaches one of them, yet must report the sum over all of them, including workers that
have died since (a counter must never go backwards because gunicorn replaced a worker).
``prometheus_client``'s multiprocess mode does exactly that: with ``PROMETHEUS_MULTIPROC_DIR``
set (by ``app.server``, before ``prometheus_client`` is imported) every metric value lives in a
per-process memory-mapped file in that directory, and a scrape sums the files of every process
that ever wrote one; gunicorn's ``child_exit`` hook calls ``mark_process_dead`` so a dead
worker's *gauges* stop counting while its counters and histograms stay in the sums. Without the
variable (tests, the app in process) the same metric objects are plain in-memory values in a
registry of this app's own, so several apps in one test process never collide.

**The hot path stays an integer increment.** The cache counters are counted where they happen,
in the service layer, which knows nothing of Prometheus: ``CacheMetrics`` is a dataclass of
plain ints (also shown by ``/readyz``), and a cache hit costs one ``+= 1``. They reach Prometheus
through ``CacheCounterSync``, which compares a tuple of those ints with the last one it published
and adds only the differences to real ``prometheus_client`` counters. A custom collector reading
the ints at scrape time would be cheaper still, but in multiprocess mode a custom collector only
sees the worker that happens to answer the scrape, so the counts would not be summed across
workers and a dead worker's would be lost.

**Written at most every ``FLUSH_INTERVAL_SECONDS``.** In multiprocess mode every ``inc`` is a
locked write to a memory-mapped file; five per request (request counter, duration sum and bucket,
outcome, cache sync) cost a cached ``GET /v1/me`` a tenth of its throughput, and even one flush
per event-loop pass (a handful of requests) cost a trivial request about 2 µs. So the request
middleware only notes each answered request (one ``append``, when its response starts), and
``Telemetry.flush`` writes what was noted ``FLUSH_INTERVAL_SECONDS`` after the first note:
each counter once, each histogram bucket once, then the cache sync. A scrape flushes its own
worker first and then waits ``SCRAPE_WAIT_SECONDS`` (longer than the interval) before summing
the files, so every request answered before the scrape arrived is in it, on whichever worker
it was answered — as long as that worker's loop is not blocked for longer than the difference.
A worker killed outright loses at most its last interval's counts; one that stops cleanly
flushes on the way out. A batch's durations reach the histogram's sum as one addition, which
may differ in the last bits from adding them one by one.

Labels are low-cardinality by construction: the route *template* (``/v1/keys/{prefix}/revoke``,
``unmatched`` when nothing matched), the method, the status, a fixed set of outcomes and tiers.
Never a key, a prefix or a client-supplied string.

``/metrics`` needs no key: keep it off the public listener (scrape it on the private network, or
filter the path at the proxy); ``METRICS_ENABLED=false`` removes it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from sqlalchemy import event
from sqlalchemy.engine import Connection, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from app.core.container import Container
from app.core.log_setup import process_id
from app.services.cache_protocol import InvalidationReport
from app.services.guarded_cache_backend import CircuitBreakingCacheBackend
from app.services.memory_cache_backend import InMemoryApiKeyCacheBackend
from app.services.metrics import CacheMetrics
from app.services.tiered_cache_backend import TieredApiKeyCacheBackend

logger = logging.getLogger(__name__)

MULTIPROC_ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"
UNMATCHED_ROUTE = "unmatched"
AUTH_OUTCOMES = (
    "valid",
    "malformed",
    "unknown",
    "revoked",
    "expired",
    "missing",
    "missing_scope",
    "ambiguous",
    "unavailable",
)
# An authenticated /v1/me answers in well under a millisecond; a database miss in a few.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

PROCESS_TIER = "process"
SHARED_TIER = "shared"

FLUSH_INTERVAL_SECONDS = 0.025
"""How long noted requests wait before they are written to the metric files."""
SCRAPE_WAIT_SECONDS = 2 * FLUSH_INTERVAL_SECONDS
"""How long a scrape waits, after its own worker's flush, for every other worker's."""
MAX_PENDING = 4_096
"""Noted requests written at once, whatever the interval: a bound on the list."""


def multiprocess_dir() -> str | None:
    """The directory the workers share their metric files in, when serving under gunicorn."""
    return os.environ.get(MULTIPROC_ENV_VAR) or None


if multiprocess_dir() is not None:
    # Every write to a metric file first asks whether the process forked since (to start files
    # of its own), with ``os.getpid``: a system call per ``inc``. prometheus_client takes the
    # process identifier as a parameter for this; ours is read once per process and refreshed
    # in a forked child, so it still differs between live processes, as the files require.
    values.ValueClass = values.MultiProcessValue(process_identifier=process_id)  # type: ignore[no-untyped-call]


class Telemetry:
    """Every metric of one app; ``app.state.telemetry``.

    ``set_revocation_log_lag(seconds)`` is the hook for the revocation-log applier: how far this
    worker's copy of the log is behind (the gauge reports the largest lag of the live workers).
    """

    def __init__(self, *, flush_interval: float = FLUSH_INTERVAL_SECONDS) -> None:
        self._flush_interval = flush_interval
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "game_api_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "game_api_request_duration_seconds",
            "Time from the request reaching the app to its response starting, by route template.",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.auth = Counter(
            "game_api_auth",
            "Authentication outcomes on routes that need a key.",
            ["outcome"],
            registry=registry,
        )
        self.cache_lookups = Counter(
            "game_api_cache_lookups",
            "Key-cache answers by tier: 'process' from this worker's memory without I/O, "
            "'shared' from the backend's awaited read (Redis for redis/tiered).",
            ["tier", "result"],
            registry=registry,
        )
        self.negative_hits = Counter(
            "game_api_negative_cache_hits",
            "Unknown keys refused from the negative cache without a database lookup.",
            registry=registry,
        )
        self.repository_lookups = Counter(
            "game_api_repository_lookups",
            "Key lookups that went to the database.",
            registry=registry,
        )
        self.cache_errors = Counter(
            "game_api_cache_errors", "Failed calls to the shared cache.", registry=registry
        )
        self.cache_bypassed = Counter(
            "game_api_cache_bypassed",
            "Cache calls skipped (circuit open, or this request already waited for one failure).",
            registry=registry,
        )
        self.breaker_opens = Counter(
            "game_api_cache_breaker_opens",
            "Times the cache circuit breaker opened.",
            registry=registry,
        )
        self.breaker_open = Gauge(
            "game_api_cache_breaker_open",
            "1 while a live worker's cache circuit breaker is open, else 0.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.invalidations = Counter(
            "game_api_cache_invalidations",
            "Cache invalidations (revoke, rotate), by whether every copy was confirmed replaced.",
            ["confirmed"],
            registry=registry,
        )
        self.invalidation_failures = Counter(
            "game_api_cache_invalidation_failures",
            "Invalidations the cache could not carry out (the key is still revoked).",
            registry=registry,
        )
        self.invalidation_acks = Counter(
            "game_api_cache_invalidation_acks",
            "tiered: worker acknowledgements received for invalidations.",
            registry=registry,
        )
        self.invalidation_acks_expected = Counter(
            "game_api_cache_invalidation_acks_expected",
            "tiered: worker acknowledgements expected (subscribers PUBLISH reached).",
            registry=registry,
        )
        self.invalidation_duration = Histogram(
            "game_api_cache_invalidation_duration_seconds",
            "Time an invalidation took, acknowledgements included.",
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self.database_duration = Histogram(
            "game_api_database_call_duration_seconds",
            "Time of each database statement.",
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self.revocation_log_lag = Gauge(
            "game_api_revocation_log_lag_seconds",
            "How far the live workers' copies of the revocation log are behind (largest).",
            multiprocess_mode="livemax",
            registry=registry,
        )
        # Children made once: ``labels(...)`` takes a lock and a dict lookup per call.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.auth_outcome = {outcome: self.auth.labels(outcome) for outcome in AUTH_OUTCOMES}
        for tier in (PROCESS_TIER, SHARED_TIER):
            for result in ("hit", "miss"):
                self.cache_lookups.labels(tier, result)
        self.cache_sync: CacheCounterSync | None = None
        # What was counted since the last flush: route, method, status, seconds, outcome. The
        # served request's cycle appends to it itself (``app.request_cycle``), then calls
        # ``after_note`` only when no flush is due or the list is full: a call less per request.
        self.pending_requests: list[tuple[object, str, int, float, str | None]] = []
        self.flush_timer: asyncio.TimerHandle | None = None

    def set_revocation_log_lag(self, seconds: float) -> None:
        """How far behind this worker's copy of the revocation log is, in seconds."""
        self.revocation_log_lag.set(seconds)

    def observe_request(
        self, route: object, method: str, status: int, seconds: float, outcome: str | None
    ) -> None:
        """Count one answered request (called once per request, at its response start).

        ``route`` is the matched route (its path template becomes the label, at the flush, once
        per batch rather than once per request) or ``None``; ``outcome`` the authentication
        outcome, ``None`` on a route that needs no key. Noted in a list and written to the
        metric files at the next flush (see the module docstring): one ``append`` on the
        request's path instead of five locked writes.
        """
        pending = self.pending_requests
        pending.append((route, method, status, seconds, outcome))
        if self.flush_timer is None or len(pending) >= MAX_PENDING:
            self.after_note()

    def after_note(self) -> None:
        """After a request was appended to ``pending_requests``: schedule the flush when none is
        due, or write at once when the list is full."""
        if self.flush_timer is None:
            self._schedule_flush()
        elif len(self.pending_requests) >= MAX_PENDING:
            self.flush()

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a tool, a test): write at once
            self.flush()
            return
        self.flush_timer = loop.call_later(self._flush_interval, self.flush)

    def flush(self) -> None:
        """Write what was counted since the last flush: each counter and bucket once."""
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        requests, self.pending_requests = self.pending_requests, []
        # Grouped by the route's identity: Starlette's routes define ``==`` and are unhashable.
        groups: dict[tuple[int, str, int], tuple[object, list[float]]] = {}
        outcomes: dict[str, int] = {}
        for route, method, status, seconds, outcome in requests:
            key = (id(route), method, status)
            group = groups.get(key)
            if group is None:
                group = groups[key] = (route, [])
            group[1].append(seconds)
            if outcome is not None:
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for (_, method, status), (route, durations) in groups.items():
            counter, histogram = self._request_children_of((template_of(route), method, status))
            counter.inc(len(durations))
            observe_many(histogram, durations)
        for outcome, count in outcomes.items():
            counter = self.auth_outcome.get(outcome) or self.auth_outcome["unavailable"]
            counter.inc(count)
        sync = self.cache_sync
        if sync is not None:
            sync.flush()

    def _request_children_of(self, key: tuple[str, str, int]) -> tuple[Any, Any]:
        children = self._request_children.get(key)
        if children is None:
            route, method, status = key
            children = (
                self.requests.labels(route, method, str(status)),
                self.request_duration.labels(route),
            )
            self._request_children[key] = children
        return children

    def scrape(self) -> bytes:
        """The text exposition: every worker's values summed in multiprocess mode.

        May run in a thread: it only reads. The caller flushes ``cache_sync`` first, on the
        event loop, where the counted ints are written.
        """
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def observe_many(histogram: Any, amounts: list[float]) -> None:
    """``observe`` each of ``amounts``, with one write per bucket touched and one for the sum.

    prometheus_client's ``Histogram.observe`` adds to the sum and to the first bucket whose
    bound is not below the amount; this does the same arithmetic for a batch through the same
    child values (``tests/api/test_telemetry_batching.py`` compares the exposition of both).
    """
    buckets = histogram._buckets
    # ``bisect_left`` over every amount and the tally both run in C: a batch is hundreds.
    for index, count in collections.Counter(
        map(partial(bisect_left, histogram._upper_bounds), amounts)
    ).items():
        buckets[index].inc(count)
    histogram._sum.inc(sum(amounts))


def template_of(route: object) -> str:
    """A matched route's path template (never the path itself: bounded label values), or
    ``unmatched``. A string is taken as the template already."""
    path = route if isinstance(route, str) else getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class CacheCounterSync:
    """Publishes the service's ``CacheMetrics`` ints to Prometheus counters (see the docstring).

    ``shared_tier`` labels the lookups answered by the backend's awaited read: the memory
    backend's ``get`` reads the same dict as its no-await peek, so both are the process tier.
    """

    def __init__(
        self,
        source: CacheMetrics,
        telemetry: Telemetry,
        *,
        shared_tier: str,
        breaker: CircuitBreakingCacheBackend | None,
    ) -> None:
        self._source = source
        self._breaker = breaker
        self._breaker_was_open = False
        lookups = telemetry.cache_lookups
        # In the order of ``_read``.
        self._counters = (
            lookups.labels(PROCESS_TIER, "hit"),
            lookups.labels(shared_tier, "hit"),
            lookups.labels(shared_tier, "miss"),
            telemetry.negative_hits,
            telemetry.repository_lookups,
            telemetry.cache_errors,
            telemetry.cache_bypassed,
            telemetry.breaker_opens,
            telemetry.invalidation_failures,
        )
        self._breaker_gauge = telemetry.breaker_open
        self._published = self._read()

    def _read(self) -> tuple[int, ...]:
        m = self._source
        return (
            m.local_hits,
            m.shared_hits,
            m.cache_misses,
            m.negative_hits,
            m.repository_lookups,
            m.cache_errors,
            m.cache_bypassed,
            m.breaker_opened,
            m.invalidation_failures,
        )

    def flush(self) -> None:
        """Add what changed since the last flush; usually one ``inc`` or none."""
        current = self._read()
        published = self._published
        if current != published:
            for counter, now, before in zip(self._counters, current, published, strict=True):
                if now != before:
                    counter.inc(now - before)
            self._published = current
        breaker = self._breaker
        if breaker is not None:
            is_open = breaker.is_open
            if is_open != self._breaker_was_open:
                self._breaker_gauge.set(1 if is_open else 0)
                self._breaker_was_open = is_open


def attach_cache(telemetry: Telemetry, cache: object, metrics: CacheMetrics) -> None:
    """Count ``cache``'s work: its counters, its breaker and its invalidations."""
    breaker: CircuitBreakingCacheBackend | None = None
    if isinstance(cache, CircuitBreakingCacheBackend):
        breaker = cache
    elif isinstance(cache, TieredApiKeyCacheBackend):
        breaker = cache.shared
    shared_tier = PROCESS_TIER if isinstance(cache, InMemoryApiKeyCacheBackend) else SHARED_TIER
    telemetry.cache_sync = CacheCounterSync(
        metrics, telemetry, shared_tier=shared_tier, breaker=breaker
    )
    _time_invalidations(telemetry, cache)


def _time_invalidations(telemetry: Telemetry, cache: object) -> None:
    """Wrap the cache's ``invalidate`` (the revoke and rotate paths, never a lookup)."""
    original: Callable[..., Awaitable[InvalidationReport]] | None = getattr(
        cache, "invalidate", None
    )
    if original is None or getattr(original, "_game_api_timed", False):
        return

    async def invalidate(*args: Any, **kwargs: Any) -> InvalidationReport:
        started = time.perf_counter()
        try:
            report = await original(*args, **kwargs)
        finally:
            telemetry.invalidation_duration.observe(time.perf_counter() - started)
        telemetry.invalidations.labels("true" if report.confirmed else "false").inc()
        if report.acknowledged is not None:
            telemetry.invalidation_acks.inc(report.acknowledged)
        if report.expected is not None:
            telemetry.invalidation_acks_expected.inc(report.expected)
        return report

    invalidate._game_api_timed = True  # type: ignore[attr-defined]
    try:
        setattr(cache, "invalidate", invalidate)  # noqa: B010  # an instance attribute
    except AttributeError:  # a class with __slots__: left uninstrumented
        logger.debug("cache invalidations of %s are not timed", type(cache).__name__)


_STARTED_AT = "_game_api_started_at"


def attach_database(telemetry: Telemetry, engine: AsyncEngine) -> None:
    """Time every statement with SQLAlchemy's cursor events (failed ones are not observed)."""
    histogram = telemetry.database_duration
    sync_engine = getattr(engine, "sync_engine", None)  # a stand-in engine has none
    if sync_engine is None or getattr(sync_engine, "_game_api_timed", False):
        return

    def before(
        _conn: Connection, _cursor: Any, _stmt: str, _params: Any, context: Any, _many: bool
    ) -> None:
        setattr(context, _STARTED_AT, time.perf_counter())

    def after(
        _conn: Connection,
        _cursor: Any,
        _stmt: str,
        _params: Any,
        context: ExecutionContext,
        _many: bool,
    ) -> None:
        started = getattr(context, _STARTED_AT, None)
        if started is not None:
            histogram.observe(time.perf_counter() - started)

    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)
    sync_engine._game_api_timed = True


def metrics_endpoint(telemetry: Telemetry) -> Callable[[Request], Awaitable[Response]]:
    """``GET /metrics``: read in a thread, since summing the worker files is file I/O."""

    async def metrics(_request: Request) -> Response:
        telemetry.flush()
        if multiprocess_dir() is not None:
            # The other workers' counts reach the files within their flush interval.
            await asyncio.sleep(SCRAPE_WAIT_SECONDS)
        body = await run_in_threadpool(telemetry.scrape)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics


def attach_telemetry(telemetry: Telemetry, container: Container) -> None:
    """Count the work of ``container``'s cache and database (the app's lifespan calls this;
    an app driven without its lifespan counts requests and authentications only)."""
    attach_cache(telemetry, container.apikey_cache(), container.metrics())
    attach_database(telemetry, container.database_engine())
    follower = container.apikey_service().follower
    if follower is not None:
        follower.on_progress = telemetry.set_revocation_log_lag
