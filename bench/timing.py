"""Per-call timing with ``time.perf_counter_ns``, subject and floor interleaved.

Every call is timed on its own (not in batches) so that the tail is real; the cost of reading
the clock is measured and reported, and it is paid by subject and floor alike. Subject and floor
run in alternating rounds so that whatever else the machine is doing slows both equally, which is
what keeps their ratio meaningful on a shared machine.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.stats import Distribution

Runner = Callable[[int], Awaitable[list[int]]]
"""Times ``n`` calls of something and returns the ``n`` durations in nanoseconds."""


def async_calls(call: Callable[[], Awaitable[object]]) -> Runner:
    """Times ``await call()``; pass the coroutine function itself (a ``partial``), not a wrapper
    coroutine, so each sample holds exactly the subject's own coroutine and nothing of ours."""

    async def run(count: int) -> list[int]:
        clock = time.perf_counter_ns
        samples = [0] * count
        for index in range(count):
            start = clock()
            await call()
            samples[index] = clock() - start
        return samples

    return run


def sync_calls(call: Callable[[], object]) -> Runner:
    """A plain function timed without any coroutine around it: the floor stays a floor."""

    async def run(count: int) -> list[int]:
        return time_sync(call, count)

    return run


def time_sync(call: Callable[[], object], count: int) -> list[int]:
    clock = time.perf_counter_ns
    samples = [0] * count
    for index in range(count):
        start = clock()
        call()
        samples[index] = clock() - start
    return samples


def clock_overhead_ns(count: int = 20_000) -> float:
    """The median cost of one timed empty call: the harness's own share of every sample."""
    return Distribution.of(time_sync(lambda: None, count)).median


@dataclass(frozen=True, slots=True)
class Comparison:
    subject: Distribution
    floor: Distribution


async def compare(
    subject: Runner, floor: Runner, *, calls: int, rounds: int = 10, warmup: int = 2_000
) -> Comparison:
    """``calls`` timed calls of each, in ``rounds`` alternating rounds, after a warm-up."""
    await subject(warmup)
    await floor(warmup)
    per_round = max(1, calls // rounds)
    subject_samples: list[int] = []
    floor_samples: list[int] = []
    gc.collect()
    for _ in range(rounds):
        subject_samples += await subject(per_round)
        floor_samples += await floor(per_round)
    return Comparison(Distribution.of(subject_samples), Distribution.of(floor_samples))
