"""The end-to-end benchmark's core split: servers on one half of the cores, wrk and Redis on the
other, with real processes and the kernel's own affinity masks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cores import CoreSplit, applied, pin_process

two_cores = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs at least two usable cores"
)


def _allowed(pid: int) -> dict[int, frozenset[int]]:
    """Each thread of ``pid`` and the cores it may run on, as the kernel reports them."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        threads[int(task.name)] = frozenset(os.sched_getaffinity(int(task.name)))
    return threads


def test_the_first_half_serves_and_the_second_loads() -> None:
    assert CoreSplit.of({0, 1}) == CoreSplit(frozenset({0}), frozenset({1}))
    assert CoreSplit.of({6, 2, 4, 3}) == CoreSplit(frozenset({2, 3}), frozenset({4, 6}))
    assert CoreSplit.of({0, 1, 2}) == CoreSplit(frozenset({0}), frozenset({1, 2}))


def test_a_single_core_is_not_split() -> None:
    assert CoreSplit.of({3}) is None


@two_cores
def test_servers_start_on_the_serving_cores_and_wrk_on_the_loading_ones() -> None:
    split = CoreSplit.of_this_process()
    assert split is not None
    before = os.sched_getaffinity(0)
    report = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
    with split.applied() as start_on:
        with start_on.serving():
            served = subprocess.run(report, capture_output=True, text=True, check=True).stdout
        loaded = subprocess.run(report, capture_output=True, text=True, check=True).stdout
        assert os.sched_getaffinity(0) == split.loading
    assert served.strip() == str(sorted(split.serving))
    assert loaded.strip() == str(sorted(split.loading))
    assert os.sched_getaffinity(0) == before


@two_cores
def test_redis_is_moved_with_every_thread_and_moved_back() -> None:
    """Affinity is per thread: a process whose threads kept their old masks would still run on
    the serving cores."""
    split = CoreSplit.of_this_process()
    assert split is not None
    code = (
        "import threading, sys\n"
        "stop = threading.Event()\n"
        "workers = [threading.Thread(target=stop.wait) for _ in range(3)]\n"
        "[w.start() for w in workers]\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "stop.set()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        everywhere = frozenset(os.sched_getaffinity(0))
        assert len(_allowed(child.pid)) == 4
        with split.applied(redis_pid=child.pid):
            assert set(_allowed(child.pid).values()) == {split.loading}
        assert set(_allowed(child.pid).values()) == {everywhere}
    finally:
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.close()
        child.wait(timeout=10)


@two_cores
def test_pinning_a_process_that_has_gone_raises() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    with pytest.raises(FileNotFoundError):
        pin_process(child.pid, {0})


def test_without_a_split_nothing_is_pinned() -> None:
    before = os.sched_getaffinity(0)
    report = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
    with applied(None) as start_on, start_on.serving():
        assert os.sched_getaffinity(0) == before
        served = subprocess.run(report, capture_output=True, text=True, check=True).stdout
    assert served.strip() == str(sorted(before))
