"""A tiny in-process run of the benchmark suite: the pipeline works and its files have the
promised structure. No timing is asserted; the full benchmark is ``make bench``, not a test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import run

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs_redis_server() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")


def test_in_process_parts_write_results_with_their_structure(tmp_path: Path) -> None:
    status = run.main(
        [
            "--quick",
            "--parts",
            "hit_cost,miss_storm",
            "--calls",
            "300",
            "--output-dir",
            str(tmp_path),
        ]
    )

    assert status == 0
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["mode"] == "quick"
    assert {"cpu", "cores", "python", "redis_server", "date"} <= set(document["machine"])
    assert set(document["sections"]) == {"hit_cost", "miss_storm"}

    hit_cost = document["sections"]["hit_cost"]["data"]
    assert {"memory", "redis"} <= set(hit_cost["backends"])
    for figures in hit_cost["backends"].values():
        assert figures["subject_ns"]["count"] >= 300
        assert figures["floor_ns"]["count"] >= 300
        assert figures["median_ratio"] > 0

    storm = document["sections"]["miss_storm"]["data"]["backends"]
    assert {row["backend"] for row in storm} >= {"memory", "redis"}
    assert all(row["repository_lookups"] >= 1 for row in storm)

    assert document["checks"]
    assert {check["status"] for check in document["checks"]} <= {"pass", "short"}

    markdown = (tmp_path / "RESULTS.md").read_text()
    assert "## Machine" in markdown
    assert "| target | measured | required | status |" in markdown
    assert "1. Cache-hit cost" in markdown
    assert not (tmp_path / "throughput.png").exists()  # no end-to-end part, no chart


def test_unknown_part_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run.main(["--parts", "everything"])
    assert "unknown part" in capsys.readouterr().err
