"""``python -m bench.cpu_cost``: CPU per request of both servers, read from ``/proc``."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from bench.cpu_cost import cpu_seconds
from tests.bench.bench_module import run_bench_module

_SUBJECT_LINE = re.compile(r"^\s+(?P<name>\S.*?)\s+(?P<cost>\d+\.\d) µs")


def test_cpu_seconds_counts_the_time_a_process_computed() -> None:
    user_before, system_before = cpu_seconds([os.getpid()])
    started = time.process_time()
    while time.process_time() - started < 0.1:  # 100 ms of this process's own CPU
        sum(range(1_000))
    user_after, system_after = cpu_seconds([os.getpid()])

    assert (user_after + system_after) - (user_before + system_before) >= 0.05


def _cpu_cost(*arguments: str) -> subprocess.CompletedProcess[str]:
    return run_bench_module("cpu_cost", *arguments, timeout=300)


@pytest.mark.slow
def test_both_servers_are_loaded_and_their_cost_per_request_reported() -> None:
    done = _cpu_cost("--rounds", "1", "--seconds", "1", "--set", "METRICS_ENABLED=false")

    assert done.returncode == 0, done.stderr
    costs = {
        found["name"]: float(found["cost"])
        for line in done.stdout.splitlines()
        if (found := _SUBJECT_LINE.match(line))
    }
    assert costs.keys() == {"bare app /healthz", "/healthz"}, done.stdout
    assert all(cost > 0 for cost in costs.values())
    assert "bare app / ours, CPU per request:" in done.stdout


def test_a_setting_without_a_value_is_refused() -> None:
    done = _cpu_cost("--set", "METRICS_ENABLED")

    assert done.returncode != 0
    assert "expected NAME=VALUE, got 'METRICS_ENABLED'" in done.stderr
