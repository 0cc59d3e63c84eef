"""Request metrics are written once per flush interval, and a batch writes what one-by-one
would."""

from __future__ import annotations

import asyncio
import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from app.api.telemetry import REQUEST_BUCKETS, Telemetry, observe_many

amounts = st.lists(
    st.one_of(
        st.floats(min_value=0.0, max_value=10.0, allow_nan=False),
        st.sampled_from(REQUEST_BUCKETS),  # exactly on a bound: that bucket, not the next
    ),
    max_size=50,
)


def _histogram() -> tuple[Histogram, CollectorRegistry]:
    registry = CollectorRegistry()
    histogram = Histogram("h", "test", buckets=REQUEST_BUCKETS, registry=registry)
    return histogram, registry


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


@given(amounts=amounts)
def test_a_batch_lands_in_the_buckets_one_by_one_observing_would(amounts: list[float]) -> None:
    one_by_one, expected_registry = _histogram()
    batched, batched_registry = _histogram()
    for amount in amounts:
        one_by_one.observe(amount)

    observe_many(batched, amounts)

    expected, got = _samples(expected_registry), _samples(batched_registry)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if name[0] == "h_sum":
            assert math.isclose(got[name], value, rel_tol=1e-12, abs_tol=1e-12)
        else:
            assert got[name] == value


def _requests_counted(telemetry: Telemetry) -> float:
    value = telemetry.registry.get_sample_value(
        "game_api_requests_total", {"route": "/v1/me", "method": "GET", "status": "200"}
    )
    return value or 0.0


class _ObservedFlushes(Telemetry):
    """A ``Telemetry`` that says when it flushed, so a test waits for the flush itself."""

    def __init__(self, flush_interval: float) -> None:
        super().__init__(flush_interval=flush_interval)
        self.flushed = asyncio.Event()
        self.flushed_at: list[float] = []

    def flush(self) -> None:
        super().flush()
        self.flushed_at.append(asyncio.get_running_loop().time())
        self.flushed.set()


async def test_noted_requests_are_written_together_once_the_interval_has_passed() -> None:
    interval = 0.02
    telemetry = _ObservedFlushes(flush_interval=interval)
    noted_at = asyncio.get_running_loop().time()

    for _ in range(3):
        telemetry.observe_request("/v1/me", "GET", 200, 0.001, "valid")
    noted_only = _requests_counted(telemetry)
    await telemetry.flushed.wait()

    assert noted_only == 0
    assert len(telemetry.flushed_at) == 1  # one flush for the three requests
    assert telemetry.flushed_at[0] - noted_at >= interval * 0.9  # the loop clock's resolution
    assert _requests_counted(telemetry) == 3
    assert telemetry.registry.get_sample_value("game_api_auth_total", {"outcome": "valid"}) == 3


async def test_a_request_noted_after_an_early_flush_is_still_written_by_a_timer() -> None:
    telemetry = _ObservedFlushes(flush_interval=0.02)

    telemetry.observe_request("/v1/me", "GET", 200, 0.001, None)
    telemetry.flush()  # before its timer, as a scrape or a stopping worker does
    assert _requests_counted(telemetry) == 1
    telemetry.flushed.clear()
    telemetry.observe_request("/v1/me", "GET", 200, 0.001, None)
    await asyncio.wait_for(telemetry.flushed.wait(), timeout=5.0)

    assert _requests_counted(telemetry) == 2


def test_without_a_loop_counts_are_written_at_once() -> None:
    telemetry = Telemetry()

    telemetry.observe_request("/v1/me", "GET", 200, 0.001, None)

    assert _requests_counted(telemetry) == 1
