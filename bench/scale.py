"""Part 5: does a hit cost more with a million keys cached, and does ``clear()`` block Redis?

One dedicated ``redis-server`` of the benchmark's own holds two databases: db 0 with 1 000
cached keys and db 1 with 1 000 000 (plus foreign keys outside our prefix, which ``clear`` must
leave alone). The hit cost in both is measured interleaved, so noise hits both alike. Then
``clear()`` runs over the million while a probe client in another process sends PINGs; its worst
wait is compared with the worst wait of the same probe over an idle Redis just before.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from redis.asyncio import Redis

from bench.backends import BenchService, open_service, unique_prefix
from bench.hit_cost import seeded_key
from bench.results import Check, SectionResult, fmt_ns, fmt_ratio
from bench.stats import ratio
from bench.timing import async_calls, compare
from tests.support.redis_server import RedisServerProcess

SMALL_KEYS = 1_000
FOREIGN_KEYS = 1_000
FILL_BATCH = 100_000
FILL_TTL_SECONDS = 3_600
RATIO_TARGET = 1.1
PROBE_WORST_TARGET_MS = 10.0

# Server-side bulk fill (like DEBUG POPULATE, but in our format): each key is our prefix and a
# 64-hex-digit name like a sha256 digest; each value is our compact JSON with a valid-looking
# public prefix. A private server is blocked for well under a second per batch, which is fine.
_FILL_SCRIPT = """
local prefix, first, count, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
for i = first, first + count - 1 do
    local name = redis.sha1hex(tostring(i))
    local digest = name .. string.sub(name, 1, 24)
    local value = '{"apiKey":"game_' .. string.sub(name, 1, 8) .. '","active":true}'
    redis.call('SET', prefix .. digest, value, 'EX', ttl)
end
return count
"""


async def fill(client: Redis, prefix: str, total: int) -> float:
    """Write ``total`` entries under ``prefix``; returns the seconds it took."""
    start = time.perf_counter()
    script = client.register_script(_FILL_SCRIPT)
    for first in range(0, total, FILL_BATCH):
        count = min(FILL_BATCH, total - first)
        await script(args=[prefix, first, count, FILL_TTL_SECONDS])
    return time.perf_counter() - start


async def fill_foreign(client: Redis, count: int) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for index in range(count):
            pipe.set(f"other:{index}", b"not ours")
        await pipe.execute()


class PingProbe:
    """``bench.ping_probe`` in a child process; ``stop()`` returns its summary."""

    def __init__(self, url: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.ping_probe", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":
            self._process.kill()
            raise RuntimeError("the ping probe did not start")

    def stop(self) -> dict[str, float]:
        try:
            output, _ = self._process.communicate("stop\n", timeout=30)
        finally:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
        return dict(json.loads(output.strip().splitlines()[-1]))


async def probe_during(url: str, seconds: float | None, work: Any = None) -> dict[str, float]:
    """Probe while ``work`` (a coroutine) runs, or for ``seconds`` of idle Redis."""
    probe = PingProbe(url)
    try:
        if work is not None:
            await work
        else:
            await asyncio.sleep(seconds or 0)
    finally:
        summary = probe.stop()
    return summary


async def watch_server_latency(client: Redis) -> None:
    """Have Redis record every event (command, expiry cycle…) of 1 ms or more from now on."""
    await client.config_set("latency-monitor-threshold", 1)
    await client.latency_reset()


async def worst_server_latency_ms(client: Redis) -> int:
    """The longest event Redis itself recorded since ``watch_server_latency``; 0 if none ≥ 1 ms.

    This tells a server that blocked apart from a probe that waited because the machine's two
    cores were busy (the probe measures both; Redis's own monitor only the first).
    """
    events = await client.latency_latest()
    return max((int(event[3]) for event in events), default=0)


async def hit_cost_ratio(small: BenchService, large: BenchService, calls: int) -> dict[str, Any]:
    small_key = await seeded_key(small)
    large_key = await seeded_key(large)

    async def small_hit() -> object:
        return await small.service.authenticate(small_key)

    async def large_hit() -> object:
        return await large.service.authenticate(large_key)

    result = await compare(async_calls(large_hit), async_calls(small_hit), calls=calls)
    return {
        "small_ns": result.floor.as_dict(),
        "large_ns": result.subject.as_dict(),
        "median_ratio": ratio(result.subject.median, result.floor.median),
        "p99_ratio": ratio(result.subject.p99, result.floor.p99),
    }


async def timed_clear(large: BenchService) -> float:
    start = time.perf_counter()
    await large.service.clear_cache()
    return time.perf_counter() - start


async def measure(server: RedisServerProcess, large_keys: int, calls: int) -> dict[str, Any]:
    small_url = f"redis://127.0.0.1:{server.port}/0"
    large_url = f"redis://127.0.0.1:{server.port}/1"
    prefix = unique_prefix("scale")
    # The service's client keeps its request-path timeouts; bulk work gets a patient one.
    admin_small = Redis.from_url(small_url, socket_timeout=120)
    admin_large = Redis.from_url(large_url, socket_timeout=120)
    async with (
        open_service("redis", small_url, key_prefix=prefix) as small,
        open_service("redis", large_url, key_prefix=prefix) as large,
    ):
        await fill(admin_small, prefix, SMALL_KEYS - 1)
        fill_s = await fill(admin_large, prefix, large_keys - 1)
        await fill_foreign(admin_large, FOREIGN_KEYS)
        hits = await hit_cost_ratio(small, large, calls)
        entries_before = int(await admin_large.dbsize())
        idle_probe = await probe_during(small_url, seconds=2.0)
        await watch_server_latency(admin_small)
        clear_s = 0.0

        async def clear() -> None:
            nonlocal clear_s
            clear_s = await timed_clear(large)

        clear_probe = await probe_during(small_url, None, clear())
        left = int(await admin_large.dbsize())
        server_worst_ms = await worst_server_latency_ms(admin_small)
    await admin_small.aclose()
    await admin_large.aclose()
    return {
        "keys_small": SMALL_KEYS,
        "keys_large": large_keys,
        "fill_seconds": fill_s,
        "hit_cost": hits,
        "clear": {
            "entries_before": entries_before,
            "seconds": clear_s,
            "entries_per_second": (entries_before - left) / clear_s if clear_s else 0.0,
            "foreign_keys_before": FOREIGN_KEYS,
            "keys_left_after": left,
        },
        "probe_idle": idle_probe,
        "probe_during_clear": clear_probe,
        "server_worst_event_ms": server_worst_ms,
    }


async def run(large_keys: int, calls: int) -> SectionResult:
    server = RedisServerProcess()
    server.start()
    try:
        data = await measure(server, large_keys, calls)
    finally:
        server.close()
    hits, clear, idle, busy = (
        data["hit_cost"],
        data["clear"],
        data["probe_idle"],
        data["probe_during_clear"],
    )
    section = SectionResult(
        key="scale",
        title=f"5. Scale: {SMALL_KEYS:,} vs {large_keys:,} cached keys in Redis, and clear()",
        method=(
            f"A dedicated redis-server; db 0 holds {SMALL_KEYS:,} cached keys, db 1 holds "
            f"{large_keys:,} (filled server-side by a Lua script in our key and JSON format) and "
            f"{FOREIGN_KEYS:,} foreign keys. Redis-backend hit cost: {calls:,} calls in each db, "
            "interleaved. clear() over db 1 through ApiKeyService.clear_cache() while a probe "
            "process PINGs (about one per ms); limit = the same probe over idle Redis. Redis's "
            "latency monitor (threshold 1 ms) shows whether the server itself ever stalled."
        ),
        columns=["measure", "value", "limit / reference", "ratio"],
    )
    section.rows = [
        [
            f"hit cost, {large_keys:,} keys (median)",
            fmt_ns(hits["large_ns"]["median"]),
            f"{SMALL_KEYS:,} keys: {fmt_ns(hits['small_ns']['median'])}",
            fmt_ratio(hits["median_ratio"]),
        ],
        [
            f"hit cost, {large_keys:,} keys (p99)",
            fmt_ns(hits["large_ns"]["p99"]),
            f"{SMALL_KEYS:,} keys: {fmt_ns(hits['small_ns']['p99'])}",
            fmt_ratio(hits["p99_ratio"]),
        ],
        [
            f"clear() of {clear['entries_before'] - clear['keys_left_after']:,} entries",
            f"{clear['seconds']:.2f} s",
            f"{clear['entries_per_second']:,.0f} entries/s; foreign keys left: "
            f"{clear['keys_left_after']:,} of {FOREIGN_KEYS:,}",
            "",
        ],
        [
            "probe worst wait during clear()",
            f"{busy['worst_ms']:.2f} ms",
            f"idle Redis: {idle['worst_ms']:.2f} ms",
            fmt_ratio(ratio(busy["worst_ms"], idle["worst_ms"])),
        ],
        [
            "probe p99 wait during clear()",
            f"{busy['p99_ms']:.2f} ms",
            f"idle Redis: {idle['p99_ms']:.2f} ms ({int(busy['count']):,} PINGs during clear)",
            fmt_ratio(ratio(busy["p99_ms"], idle["p99_ms"])),
        ],
        [
            "Redis's own latency monitor during clear()",
            "no event ≥ 1 ms"
            if data["server_worst_event_ms"] == 0
            else f"worst event {data['server_worst_event_ms']} ms",
            "threshold 1 ms",
            "",
        ],
    ]
    section.data = data
    section.checks = [
        Check(
            f"scale: {large_keys:,} / {SMALL_KEYS:,} keys hit-cost ratio (median)",
            hits["median_ratio"],
            RATIO_TARGET,
            "<=",
        ),
        Check(
            "scale: probe's worst wait during clear()",
            busy["worst_ms"],
            PROBE_WORST_TARGET_MS,
            "<=",
            "ms",
        ),
    ]
    if clear["keys_left_after"] != FOREIGN_KEYS:
        section.notes.append(
            f"clear() left {clear['keys_left_after']:,} keys; only the {FOREIGN_KEYS:,} foreign "
            "keys should remain."
        )
    return section
