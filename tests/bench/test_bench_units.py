"""The benchmark's small pure pieces: targets, wrk's summary line, connection balance, JSON."""

from __future__ import annotations

import json
import math

from bench.report import render_json
from bench.results import Check, SectionResult
from bench.stats import Distribution
from bench.wrk import balanced, parse


def test_check_compares_in_the_direction_it_names() -> None:
    assert Check("at most", 1.0, 1.3, "<=").status == "pass"
    assert Check("at most", 1.4, 1.3, "<=").status == "short"
    assert Check("at least", 0.96, 0.95, ">=").status == "pass"
    assert Check("at least", 0.5, 0.95, ">=").status == "short"
    assert Check("unmeasured", math.nan, 1.0, "<=").status == "short"


def test_distribution_uses_nearest_rank() -> None:
    summary = Distribution.of(list(range(1, 101)))
    assert (summary.median, summary.p99, summary.worst, summary.count) == (50, 99, 100, 100)


def test_wrk_summary_line_is_read_and_carries_the_split() -> None:
    output = (
        "Running 2s test\n"
        'BENCH_JSON {"requests":2000,"duration_us":2000000,"non_2xx":0,"socket_errors":0,'
        '"p50_us":1500,"p90_us":3000,"p99_us":9000,"max_us":20000}\n'
    )
    result = parse(output, split={101: 14, 102: 18}, attempts=2)
    assert result.rps == 1000
    assert (result.p50_ms, result.p99_ms) == (1.5, 9.0)
    assert result.connections_per_worker == (18, 14)
    assert result.attempts == 2


def test_a_lopsided_connection_split_is_not_balanced() -> None:
    assert balanced({1: 16, 2: 16})
    assert not balanced({1: 31, 2: 1})
    assert balanced({})  # unknown: accepted rather than retried forever


def test_results_json_has_no_infinity() -> None:
    section = SectionResult(
        key="demo", title="demo", method="", columns=[], data={"ratio": math.inf}
    )
    document = json.loads(render_json({"date": "today"}, "quick", 1.0, [section]))
    assert document["sections"]["demo"]["data"]["ratio"] is None
