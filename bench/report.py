"""Writing the results: ``RESULTS.md`` for people, ``results.json`` for machines."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.results import Check, SectionResult

RERUN = (
    "make bench            # full run, under 15 minutes on 2 cores\n"
    "make bench-quick      # a check of the pipeline, under 3 minutes"
)


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _measured(check: Check) -> str:
    if math.isnan(check.measured):
        return "n/a"
    value = f"{check.measured:.3g}" if isinstance(check.measured, float) else str(check.measured)
    return f"{value} {check.unit}".strip()


def checks_table(checks: list[Check]) -> list[str]:
    rows = [
        [
            check.target,
            _measured(check),
            f"{check.comparison} {check.limit:g} {check.unit}".strip(),
            "**pass**" if check.passed else "**short**",
        ]
        for check in checks
    ]
    return _table(["target", "measured", "required", "status"], rows)


def render_markdown(
    machine: dict[str, Any],
    mode: str,
    duration_s: float,
    sections: list[SectionResult],
    chart_name: str | None,
) -> str:
    checks = [check for section in sections for check in section.checks]
    lines = [
        "# Benchmark results",
        "",
        f"Mode **{mode}**, run on {machine['date']} in {duration_s:.0f} s. Rerun with:",
        "",
        "```",
        RERUN,
        "```",
        "",
        "Every figure is a ratio against a limit measured in the same run (so it holds on a noisy"
        " machine); absolute numbers are beside it for context only. Where a request's time goes"
        " (the profile behind the biggest gap): [PROFILE.md](PROFILE.md).",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu']} ({machine['cores']} cores)",
        f"- Python: {machine['implementation']} {machine['python']} on {machine['os']}",
        f"- redis-server: {machine['redis_server']}",
        f"- wrk: {machine['wrk']}",
        f"- load average at start: {', '.join(str(v) for v in machine['load_average_at_start'])}",
        "",
        "## Targets",
        "",
        *checks_table(checks),
        "",
    ]
    if chart_name:
        lines += [
            "## Throughput and p99 per backend, beside their yardsticks",
            "",
            f"![throughput and p99 per backend]({chart_name})",
            "",
        ]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.method:
            lines += [section.method, ""]
        if section.rows:
            lines += [*_table(section.columns, section.rows), ""]
        lines += [f"- {note}" for note in section.notes]
        if section.notes:
            lines.append("")
    return "\n".join(lines)


def render_json(
    machine: dict[str, Any], mode: str, duration_s: float, sections: list[SectionResult]
) -> str:
    document = {
        "machine": machine,
        "mode": mode,
        "duration_seconds": duration_s,
        "sections": {section.key: section.as_dict() for section in sections},
        "checks": [check.as_dict() for section in sections for check in section.checks],
    }
    return json.dumps(_finite(document), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    """JSON has no infinity or NaN: a ratio against a zero limit is written as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def print_summary(sections: list[SectionResult]) -> str:
    """The console version: each table and the targets, as the markdown renders them."""
    lines: list[str] = []
    for section in sections:
        lines += ["", section.title]
        if section.rows:
            lines += _table(section.columns, section.rows)
        lines += [f"  note: {note}" for note in section.notes]
    checks = [check for section in sections for check in section.checks]
    lines += ["", "Targets", *checks_table(checks)]
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
