"""``python -m bench.edge_cost``: every subject is answered 200 as served (it stops otherwise),
and the Redis it used is left as it was; ``bench.instruction_cost`` runs it once per subject.

Run as a separate process, as ``bench.instruction_cost`` runs it: the module points
prometheus_client at metric files of its own when imported, which must not leak into the
test session.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

SUBJECTS = ["/v1/me (redis)", "/bench/me-redis-get", "/v1/me", "/bench/me"]


def _edge_cost(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bench.edge_cost", "--rounds", "1", "--requests", "24"]
    return subprocess.run(
        [*command, "--connections", "2", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.redis_server
def test_the_redis_subjects_are_served_and_leave_no_keys(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        before = set(client.scan_iter(match="bench:edge:*"))
        only = [argument for subject in SUBJECTS for argument in ("--only", subject)]
        done = _edge_cost("--redis-url", redis_url, *only)
        assert done.returncode == 0, done.stderr
        measured = [line.split("  ")[1].strip() for line in done.stdout.splitlines()[1:5]]
        assert measured == ["/bench/me", "/v1/me", "/v1/me (redis)", "/bench/me-redis-get"]
        assert "local hits" in done.stdout
        assert set(client.scan_iter(match="bench:edge:*")) == before
    finally:
        client.close()


def test_an_unknown_subject_is_refused() -> None:
    done = _edge_cost("--only", "/nowhere")
    assert done.returncode != 0
    assert "no such subject: '/nowhere'" in done.stderr
