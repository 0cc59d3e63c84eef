"""Commands the benchmarks run that are not Python packages (``wrk``, ``valgrind``).

They come from the distribution's packages, installed by ``bench/ensure_tool.sh`` on first use
when missing, so a benchmark on a fresh machine needs nothing done by hand.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ENSURE_TOOL = Path(__file__).resolve().parent / "ensure_tool.sh"


class ToolUnavailable(Exception):
    """The command is missing and could not be installed (no root, no package)."""


def ensure_command(command: str, package: str) -> str:
    """The path of ``command``, installing ``package`` first when it is missing."""
    if shutil.which(command) is None:
        done = subprocess.run(
            ["sh", str(ENSURE_TOOL), command, package], capture_output=True, text=True
        )
        if done.returncode != 0 or shutil.which(command) is None:
            raise ToolUnavailable(f"{command} is not available: {done.stderr.strip()}")
    path = shutil.which(command)
    assert path is not None
    return path
