"""What telemetry costs: ``GET /v1/me`` throughput with metrics and the access log on vs off.

Two ``game-api serve`` servers run side by side on 127.0.0.1 with the same settings but
``METRICS_ENABLED``/``ACCESS_LOG`` (both at ``LOG_LEVEL=INFO``, so every access event is really
written), and wrk loads them in alternating rounds, so drift in the machine's speed falls on
both alike. The figure is the median of the per-round ratios (on / off: two runs one after the
other); the target is at least 0.97. As in ``bench.throughput``, the servers run on one half of
the cores, one worker per core (``bench.cores.workers_for``), and wrk on the other.

    .venv/bin/python -m bench.telemetry_cost [--seconds 5] [--rounds 3] [--workers N]
        [--log-format console|json] [--only METRICS_ENABLED|ACCESS_LOG]
"""

from __future__ import annotations

import argparse
import json
import statistics
from contextlib import ExitStack
from typing import Any

from bench.cores import CoreSplit, applied, workers_for
from bench.results import Check, SectionResult
from bench.servers import LiveServer, connections_per_worker, wait_for_workers
from bench.wrk import LoadResult, run_wrk

CONNECTIONS = 32
WARMUP_SECONDS = 2.0
TARGET = 0.97


HALVES = ("METRICS_ENABLED", "ACCESS_LOG")


def _settings(on: tuple[str, ...], log_format: str) -> dict[str, str]:
    settings = {
        "APIKEY_CACHE_BACKEND": "memory",
        "APIKEY_CACHE_TTL_SECONDS": "3600",
        "EXPOSE_WORKER_ID": "false",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": log_format,
    }
    settings.update({half: "true" if half in on else "false" for half in HALVES})
    return settings


def measure(
    seconds: float,
    rounds: int,
    workers: int | None,
    log_format: str,
    on: tuple[str, ...] = HALVES,
) -> dict[str, Any]:
    """Median requests/s of each variant over ``rounds`` alternating rounds, and their ratio.

    ``on``: what the "on" server switches on (both halves by default; one, to see its share).
    ``workers``: per server; ``None`` for one per core the servers run on.
    """
    split = CoreSplit.of_this_process()
    if workers is None:
        workers = workers_for(split)
    servers = {
        "on": LiveServer(_settings(on, log_format), workers=workers),
        "off": LiveServer(_settings((), log_format), workers=workers),
    }
    results: dict[str, list[LoadResult]] = {name: [] for name in servers}
    with ExitStack() as stack:
        start_on = stack.enter_context(applied(split))
        for server in servers.values():
            stack.callback(server.close)
        keys = {name: server.create_admin_key() for name, server in servers.items()}
        for server in servers.values():
            with start_on.serving():
                server.start()
            wait_for_workers(server)
        for name, server in servers.items():
            run_wrk(server.base_url + "/v1/me", seconds=WARMUP_SECONDS, api_key=keys[name])
        for round_number in range(rounds):
            # Alternate which goes first, so neither always follows the other.
            order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
            for name in order:
                server = servers[name]
                results[name].append(
                    run_wrk(
                        server.base_url + "/v1/me",
                        seconds=seconds,
                        connections=CONNECTIONS,
                        api_key=keys[name],
                        spread=lambda server=server: connections_per_worker(server),  # type: ignore[misc]
                    )
                )
    rps = {name: statistics.median(r.rps for r in runs) for name, runs in results.items()}
    per_round = [
        on.rps / off.rps if off.rps else 0.0
        for on, off in zip(results["on"], results["off"], strict=True)
    ]
    return {
        "requests_per_second": rps,
        "rounds": {name: [round(r.rps) for r in runs] for name, runs in results.items()},
        "round_ratios": per_round,
        "ratio_on_off": statistics.median(per_round),
        "cores": None if split is None else split.describe(),
        "target": TARGET,
        "log_format": log_format,
        "on": list(on),
        "workers": workers,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, help="per server (default: one per serving core)")
    parser.add_argument("--log-format", choices=["console", "json"], default="json")
    parser.add_argument(
        "--only", choices=HALVES, help="switch on only this half in the 'on' server"
    )
    args = parser.parse_args()
    on = (args.only,) if args.only else HALVES
    print(
        json.dumps(measure(args.seconds, args.rounds, args.workers, args.log_format, on), indent=2)
    )


if __name__ == "__main__":
    main()


def run(seconds: float, rounds: int) -> SectionResult:
    """The ``make bench`` part: /v1/me with metrics and the access log on against both off."""
    measured = measure(seconds, rounds, workers=None, log_format="json")
    rps = measured["requests_per_second"]
    section = SectionResult(
        key="telemetry",
        title="Telemetry: GET /v1/me with metrics and access log on against off",
        method=(
            f"Two game-api serve --workers {measured['workers']} servers side by side (memory "
            "backend, LOG_FORMAT=json, "
            "LOG_LEVEL=INFO so every access event is written), identical but for METRICS_ENABLED "
            f"and ACCESS_LOG; wrk -c{CONNECTIONS} in {rounds} alternating round(s) of "
            f"{seconds:g} s after a {WARMUP_SECONDS:g} s warm-up. "
            + (f"Cores: {measured['cores']}. " if measured["cores"] else "")
            + "Requests/s are medians over rounds; the ratio is the median of the per-round "
            "ratios (on / off, two runs one after the other)."
        ),
        columns=["variant", "requests/s (median)", "per round"],
        data=measured,
    )
    for name in ("on", "off"):
        per_round = ", ".join(f"{value:,}" for value in measured["rounds"][name])
        section.rows.append([name, f"{rps[name]:,.0f}", per_round])
    section.checks.append(
        Check(
            target="/v1/me with metrics and access log on / off (throughput)",
            measured=measured["ratio_on_off"],
            limit=TARGET,
            comparison=">=",
        )
    )
    return section
