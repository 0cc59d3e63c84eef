"""What every part of the benchmark hands to the report: a table, raw data and checked targets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Comparison = Literal["<=", ">="]


@dataclass(frozen=True, slots=True)
class Check:
    """One target of the issue, reported as pass or short (never a test failure)."""

    target: str
    measured: float
    limit: float
    comparison: Comparison
    unit: str = ""

    @property
    def passed(self) -> bool:
        if math.isnan(self.measured):
            return False
        if self.comparison == "<=":
            return self.measured <= self.limit
        return self.measured >= self.limit

    @property
    def status(self) -> str:
        return "pass" if self.passed else "short"

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "measured": None if math.isnan(self.measured) else self.measured,
            "limit": self.limit,
            "comparison": self.comparison,
            "unit": self.unit,
            "status": self.status,
        }


@dataclass(slots=True)
class SectionResult:
    """One measured part: a formatted table for people, raw numbers for machines."""

    key: str
    title: str
    method: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "method": self.method,
            "data": self.data,
            "checks": [check.as_dict() for check in self.checks],
            "notes": self.notes,
        }


def skipped(key: str, title: str, reason: str) -> SectionResult:
    """A part that could not run, kept in the results with the reason instead of vanishing."""
    return SectionResult(
        key=key, title=title, method="", columns=[], data={"skipped": reason}, notes=[reason]
    )


def fmt_ns(value: float) -> str:
    """Nanoseconds as the most readable of ns, µs, ms."""
    if value < 1_000:
        return f"{value:.0f} ns"
    if value < 1_000_000:
        return f"{value / 1_000:.2f} µs"
    return f"{value / 1_000_000:.2f} ms"


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) or math.isinf(value) else f"{value:.2f}x"
