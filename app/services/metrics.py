"""Per-process counters for the key cache, exposed by the readiness route.

Plain integers: every increment happens on the event-loop thread, so no lock is needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class CacheMetrics:
    """What operators need to see at 3 a.m.: hit rate, database load, Redis trouble."""

    # Hits answered from this process's memory without an await (the memory backend's dict, the
    # tiered backend's trusted L1), and hits answered by the backend's awaited read: the
    # per-tier split of /metrics. Two counters rather than a total and a part, so a local hit
    # costs one increment; ``cache_hits`` is their sum.
    local_hits: int = 0
    shared_hits: int = 0
    cache_misses: int = 0
    negative_hits: int = 0
    repository_lookups: int = 0
    cache_errors: int = 0
    cache_bypassed: int = 0
    breaker_opened: int = 0
    invalidation_failures: int = 0

    @property
    def cache_hits(self) -> int:
        return self.local_hits + self.shared_hits

    def snapshot(self) -> dict[str, int]:
        return {"cache_hits": self.cache_hits, **asdict(self)}
