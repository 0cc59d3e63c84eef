"""Which cores the servers under load run on, and which the load generator and Redis run on.

On a small machine the end-to-end parts put two gunicorn workers, wrk, Redis and the benchmark's
own process on the same few cores, and the scheduler places them anew from moment to moment: in
one round both workers have a core while wrk waits, in the next a worker shares a core with wrk.
The ratio of two endpoints measured seconds apart then says more about those placements than about
the endpoints (on 2 cores, per-round ratios of the same code ranged from 0.43 to 1.46). The load
that the throughput targets were set against ran the server's workers on one core and wrk on the
other; ``CoreSplit`` does the same on any machine with at least two usable cores: the first half
of them serve, the second half load (wrk, Redis and this process, which only waits for wrk).

Affinity is inherited by children, so the servers are started while this process is on the
serving cores, and wrk while it is on the load cores. Redis, started earlier, is moved with all
its threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CoreSplit:
    """Two disjoint sets of cores: one for the servers under load, one for what loads them."""

    serving: frozenset[int]
    loading: frozenset[int]

    @classmethod
    def of(cls, cores: set[int] | frozenset[int]) -> CoreSplit | None:
        """The first half of ``cores`` to serve, the rest to load; ``None`` under two cores."""
        ordered = sorted(cores)
        if len(ordered) < 2:
            return None
        half = len(ordered) // 2
        return cls(frozenset(ordered[:half]), frozenset(ordered[half:]))

    @classmethod
    def of_this_process(cls) -> CoreSplit | None:
        """The split of the cores this process may run on."""
        return cls.of(os.sched_getaffinity(0))

    def describe(self) -> str:
        serving, loading = _listed(self.serving), _listed(self.loading)
        return f"servers on core(s) {serving}, wrk and Redis on {loading}"

    @contextmanager
    def applied(self, redis_pid: int | None = None) -> Iterator[StartOn]:
        """While inside, this process loads from the loading cores, Redis runs there too, and
        ``start_on.serving()`` starts servers on the serving cores; all is undone on the way out
        (Redis goes back to every core this process may use)."""
        before = os.sched_getaffinity(0)
        if redis_pid is not None:
            pin_process(redis_pid, self.loading)
        os.sched_setaffinity(0, self.loading)
        try:
            yield StartOn(self)
        finally:
            os.sched_setaffinity(0, before)
            if redis_pid is not None:
                pin_process(redis_pid, before)


def workers_for(split: CoreSplit | None) -> int:
    """Workers per server under load: one per core the servers run on, one with no split.

    A second worker on the same core adds no capacity, only a race for wrk's connections: the
    workers wait on one listening socket, and the one on the CPU when wrk connects takes them
    all. On 2 cores, with the servers on one, more than half of the runs stayed lopsided (every
    connection on one worker) however often they were restarted, and those served a few percent
    faster than balanced ones: as much as the gaps being measured.
    """
    return 1 if split is None else len(split.serving)


class StartOn:
    """Handed out by ``CoreSplit.applied``: where the processes started next will run."""

    def __init__(self, split: CoreSplit | None) -> None:
        self._split = split

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Processes started inside run on the serving cores (and their children after them);
        anywhere when there is no split."""
        if self._split is None:
            yield
            return
        os.sched_setaffinity(0, self._split.serving)
        try:
            yield
        finally:
            os.sched_setaffinity(0, self._split.loading)


@contextmanager
def applied(split: CoreSplit | None, redis_pid: int | None = None) -> Iterator[StartOn]:
    """``split.applied(redis_pid)``, or nothing pinned when there is no split (a single core)."""
    if split is None:
        yield StartOn(None)
        return
    with split.applied(redis_pid) as start_on:
        yield start_on


def pin_process(pid: int, cores: set[int] | frozenset[int]) -> None:
    """Every thread of process ``pid`` onto ``cores`` (affinity is per thread); threads that end
    meanwhile are skipped."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cores)
        except ProcessLookupError:
            continue


def _listed(cores: frozenset[int]) -> str:
    return ",".join(str(core) for core in sorted(cores))
