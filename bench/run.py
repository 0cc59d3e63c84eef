"""``python -m bench.run [--quick]``: run every part, write RESULTS.md, results.json, the chart.

The whole run uses a ``redis-server`` of its own on a free port (the shared one on 6379 carries
other people's traffic), plus one more for the scale part, which fills it with a million keys.
A part that fails is recorded with its error and the run goes on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import (
    chart,
    cluster,
    hit_cost,
    miss_storm,
    report,
    revocation,
    scale,
    telemetry_cost,
    throughput,
)
from bench.machine import describe_machine
from bench.results import SectionResult, skipped
from tests.support.redis_server import RedisServerProcess

BENCH_DIR = Path(__file__).resolve().parent
PARTS = ("hit_cost", "throughput", "telemetry", "revocation", "miss_storm", "scale", "cluster")
CHART_NAME = "throughput.png"


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of everything: ``full`` for the record, ``quick`` to prove the pipeline."""

    mode: str
    hit_calls: int
    load_seconds: float
    load_rounds: int
    revocation_trials: int
    partitioned_trials: int
    storm_concurrency: int
    scale_keys: int
    scale_calls: int


# Load in many short rounds rather than a few long ones: the machine's speed changes from second
# to second, and a ratio is the median of per-round ratios of two runs a second apart.
FULL = Plan("full", 50_000, 1.0, 24, 40, 10, 1_000, 1_000_000, 20_000)
QUICK = Plan("quick", 20_000, 2.0, 1, 5, 2, 1_000, 200_000, 5_000)


def _part(name: str, redis: RedisServerProcess, plan: Plan) -> Callable[[], SectionResult]:
    redis_url = redis.url
    redis_pid = None if redis.process is None else redis.process.pid
    runners: dict[str, Callable[[], SectionResult]] = {
        "hit_cost": lambda: asyncio.run(hit_cost.run(redis_url, plan.hit_calls)),
        "throughput": lambda: throughput.run(
            redis_url, plan.load_seconds, plan.load_rounds, redis_pid
        ),
        "telemetry": lambda: telemetry_cost.run(plan.load_seconds, max(1, plan.load_rounds // 2)),
        "revocation": lambda: revocation.run(plan.revocation_trials, plan.partitioned_trials),
        "miss_storm": lambda: asyncio.run(miss_storm.run(redis_url, plan.storm_concurrency)),
        "scale": lambda: asyncio.run(scale.run(plan.scale_keys, plan.scale_calls)),
        # Half the rounds of part 2: it loads two servers per backend, and the run stays short.
        "cluster": lambda: asyncio.run(
            cluster.run(redis_url, plan.hit_calls, plan.load_seconds, max(1, plan.load_rounds // 2))
        ),
    }
    return runners[name]


def run_parts(parts: Sequence[str], plan: Plan) -> tuple[list[SectionResult], bool]:
    sections: list[SectionResult] = []
    all_ran = True
    server = RedisServerProcess()
    server.start()
    try:
        for name in parts:
            print(f"[bench] {name} ...", flush=True)
            started = time.perf_counter()
            try:
                section = _part(name, server, plan)()
            except Exception as exc:
                traceback.print_exc()
                all_ran = False
                section = skipped(name, name, f"{name} failed: {type(exc).__name__}: {exc}")
            print(f"[bench] {name} done in {time.perf_counter() - started:.0f} s", flush=True)
            sections.append(section)
    finally:
        server.close()
    return sections, all_ran


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer trials, shorter runs (<3 min)")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all)",
    )
    parser.add_argument("--calls", type=int, help="override the in-process call counts")
    parser.add_argument("--output-dir", type=Path, default=BENCH_DIR)
    args = parser.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.calls is not None:
        plan = Plan(
            plan.mode,
            args.calls,
            plan.load_seconds,
            plan.load_rounds,
            plan.revocation_trials,
            plan.partitioned_trials,
            plan.storm_concurrency,
            plan.scale_keys,
            args.calls,
        )
    parts = [name for name in PARTS if name in args.parts.split(",")]
    machine = describe_machine()
    started = time.perf_counter()
    sections, all_ran = run_parts(parts, plan)
    duration = time.perf_counter() - started

    output: Path = args.output_dir
    output.mkdir(parents=True, exist_ok=True)
    throughput_data = next((s.data for s in sections if s.key == "throughput"), {})
    has_chart = chart.draw(throughput_data, output / CHART_NAME)
    report.write(
        output / "RESULTS.md",
        report.render_markdown(
            machine, plan.mode, duration, sections, CHART_NAME if has_chart else None
        ),
    )
    report.write(
        output / "results.json", report.render_json(machine, plan.mode, duration, sections)
    )
    print(report.print_summary(sections))
    print(f"\n[bench] {plan.mode} run took {duration:.0f} s; results in {output}")
    return 0 if all_ran else 1


if __name__ == "__main__":
    raise SystemExit(main())
