"""``throughput.png``: requests/s and p99 per backend, each route beside its yardstick."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a build machine; must precede pyplot
import matplotlib.pyplot as plt

COLOURS = {
    "bare app /healthz": "#d0d0d0",
    "/healthz": "#9e9e9e",
    "ceiling route": "#2ca02c",
    "one-GET route": "#ff7f0e",
    "/v1/me": "#1f77b4",
}


def draw(throughput: dict[str, Any], path: Path) -> bool:
    """Draw from the throughput section's data; ``False`` when there is nothing to draw."""
    backends: dict[str, Any] = throughput.get("backends", {})
    if not backends:
        return False
    names = list(backends)
    kinds = [kind for kind in COLOURS if any(kind in backends[name] for name in names)]
    width = 0.8 / len(kinds)
    figure, (rate_axis, p99_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for offset, kind in enumerate(kinds):
        positions = [index + (offset - (len(kinds) - 1) / 2) * width for index in range(len(names))]
        rates = [backends[name].get(kind, {}).get("rps", 0.0) for name in names]
        p99s = [backends[name].get(kind, {}).get("p99_ms", 0.0) for name in names]
        rate_axis.bar(positions, rates, width, label=kind, color=COLOURS[kind])
        p99_axis.bar(positions, p99s, width, label=kind, color=COLOURS[kind])
        for x, rate, name in zip(positions, rates, names, strict=True):
            share = backends[name].get(kind, {}).get("ratio")
            if rate and share is not None:
                rate_axis.annotate(f"{share:.2f}", (x, rate), ha="center", va="bottom", fontsize=8)
    for axis, label in ((rate_axis, "requests/s (higher is better)"), (p99_axis, "p99 ms")):
        axis.set_xticks(range(len(names)), names)
        axis.set_ylabel(label)
        axis.grid(axis="y", alpha=0.3)
    rate_axis.set_title("Throughput (label: share of its yardstick)")
    p99_axis.set_title("p99 latency (lower is better)")
    handles, labels = rate_axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(kinds), fontsize=9, frameon=False)
    workers = throughput.get("workers")
    figure.suptitle(
        "GET /v1/me and /healthz per cache backend beside their yardsticks"
        + ("" if workers is None else f", {workers} worker{'s' if workers != 1 else ''} each")
    )
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
