"""The benchmark's small pure pieces: targets, wrk's summary line, connection balance, JSON,
the throughput part's round order and statistics."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

from bench.cores import CoreSplit, workers_for
from bench.report import render_json
from bench.results import Check, SectionResult
from bench.stats import Distribution
from bench.throughput import (
    AUTHENTICATED,
    CEILING_ROUTE,
    HEALTHZ,
    checks_for,
    endpoints_for,
    round_order,
)
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


def test_each_endpoint_stays_beside_its_yardstick_in_both_orders() -> None:
    endpoints = endpoints_for("memory")
    for round_number in (0, 1):
        order = [endpoint.kind for endpoint in round_order(endpoints, round_number)]
        for endpoint in endpoints:
            if endpoint.yardstick is not None:
                assert abs(order.index(endpoint.kind) - order.index(endpoint.yardstick)) == 1
    assert round_order(endpoints, 1) == endpoints[::-1]


def test_v1_me_and_its_yardstick_are_sent_the_same_request_on_every_backend() -> None:
    # The yardstick differs from /v1/me in not checking the key, not in receiving it: a header
    # only /v1/me was sent would be parsed at /v1/me's expense alone.
    for backend in ("memory", "redis", "tiered"):
        by_kind = {endpoint.kind: endpoint for endpoint in endpoints_for(backend)}
        me = by_kind[AUTHENTICATED]
        assert me.yardstick is not None
        assert me.sends_key and by_kind[me.yardstick].sends_key
        assert not by_kind[HEALTHZ].sends_key


def test_the_healthz_target_is_the_median_of_its_per_round_ratios() -> None:
    """Rounds a second apart share the machine's speed; the median of their ratios is what is
    judged, not the ratio of medians taken over rounds that ran at different speeds."""

    def backend(healthz: list[float], me: list[float]) -> dict[str, Any]:
        return {
            AUTHENTICATED: {"against": CEILING_ROUTE, "ratio": statistics.median(me)},
            HEALTHZ: {"round_ratios": healthz},
        }

    checks = checks_for(
        {"memory": backend([0.90, 0.99, 0.96], [0.97]), "tiered": backend([0.97, 1.2], [0.93])}
    )
    by_target = {check.target: check for check in checks}
    assert by_target["memory: /v1/me / ceiling route (/bench/me) throughput"].status == "pass"
    assert by_target["tiered: /v1/me / ceiling route (/bench/me) throughput"].status == "short"
    healthz = by_target["/healthz / bare FastAPI app's /healthz throughput (all rounds)"]
    assert healthz.measured == 0.97


def test_the_servers_run_one_worker_per_core_they_are_given() -> None:
    """Two workers on one core only race for wrk's connections (see ``bench.throughput``)."""
    assert workers_for(CoreSplit(serving=frozenset({0}), loading=frozenset({1}))) == 1
    assert workers_for(CoreSplit(serving=frozenset({0, 1}), loading=frozenset({2, 3}))) == 2
    assert workers_for(None) == 1
