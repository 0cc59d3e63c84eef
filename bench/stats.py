"""Summaries of latency samples: the median and the tail, never the mean alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def percentile(sorted_samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples (``fraction`` in [0, 1])."""
    if not sorted_samples:
        raise ValueError("no samples")
    rank = min(len(sorted_samples) - 1, max(0, round(fraction * len(sorted_samples)) - 1))
    return float(sorted_samples[rank])


@dataclass(frozen=True, slots=True)
class Distribution:
    """Median, p99 and worst of one set of samples, in the unit they were taken in."""

    median: float
    p99: float
    worst: float
    count: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Distribution:
        ordered = sorted(samples)
        return cls(
            median=percentile(ordered, 0.5),
            p99=percentile(ordered, 0.99),
            worst=float(ordered[-1]),
            count=len(ordered),
        )

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "p99": self.p99, "worst": self.worst, "count": self.count}


def ratio(value: float, limit: float) -> float:
    """``value / limit``, guarded against a zero limit (reported as infinity)."""
    return value / limit if limit else float("inf")
