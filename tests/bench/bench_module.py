"""Running a ``python -m bench.<module>`` command as a user would, for the tests of its output."""

from __future__ import annotations

import subprocess
import sys


def run_bench_module(
    module: str, *arguments: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``python -m bench.<module> <arguments>`` with this interpreter; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
