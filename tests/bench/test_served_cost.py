"""``python -m bench.served_cost``: events per served request, from callgrind's simulation."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.served_cost import (
    EVENTS,
    ServedCostError,
    ensure_valgrind,
    per_request,
    read_totals,
    send_requests,
)
from tests.bench.bench_module import run_bench_module

_EVENT_LINE = re.compile(r"^\s+(?P<event>\w+)\s+(?P<count>[\d,]+)$")


def test_the_totals_of_a_real_callgrind_profile_are_read(tmp_path: Path) -> None:
    profile = tmp_path / "callgrind.out"
    subprocess.run(
        [
            ensure_valgrind(),
            "--tool=callgrind",
            "--cache-sim=yes",
            "--branch-sim=yes",
            f"--callgrind-out-file={profile}",
            "true",
        ],
        capture_output=True,
        check=True,
    )

    totals = read_totals(profile.read_text())

    assert set(EVENTS) <= totals.keys()
    assert totals["Ir"] > 0
    assert totals["I1mr"] <= totals["Ir"]


def test_a_file_that_is_not_a_profile_is_refused() -> None:
    with pytest.raises(ServedCostError, match="not a callgrind profile"):
        read_totals("version: 1\ncmd: true\n")


def test_one_request_costs_the_longer_runs_extra_over_its_extra_requests() -> None:
    few = {event: 1_000 + index for index, event in enumerate(EVENTS)}
    many = {event: count + 400 * (index + 1) for index, (event, count) in enumerate(few.items())}

    costs = per_request(few, many, 200)

    assert costs == {event: 2.0 * (index + 1) for index, event in enumerate(EVENTS)}


@pytest.fixture
def counting_server() -> Iterator[tuple[int, list[int]]]:
    """An HTTP server on a thread that answers every request 200 and counts them."""
    served: list[int] = []
    ready = threading.Event()
    port: list[int] = []
    loop = asyncio.new_event_loop()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                served.append(1)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(answer, "127.0.0.1", 0))
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait()
    yield port[0], served
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def test_exactly_the_requests_asked_for_are_sent(
    counting_server: tuple[int, list[int]],
) -> None:
    port, served = counting_server

    send_requests(port, 60, 4)

    assert len(served) == 60


def _served_cost(*arguments: str) -> subprocess.CompletedProcess[str]:
    return run_bench_module("served_cost", *arguments, timeout=900)


@pytest.mark.slow
def test_the_bare_app_served_under_callgrind_is_reported_per_request() -> None:
    done = _served_cost("--only", "bare", "--few", "8", "--many", "24", "--connections", "4")

    assert done.returncode == 0, done.stderr
    counts = {
        found["event"]: int(found["count"].replace(",", ""))
        for line in done.stdout.splitlines()
        if (found := _EVENT_LINE.match(line))
    }
    assert set(EVENTS) <= counts.keys(), done.stdout
    assert counts["Ir"] > 10_000  # a served request is hundreds of thousands of instructions


def test_runs_of_fewer_requests_than_connections_are_refused() -> None:
    done = _served_cost("--few", "8", "--many", "24", "--connections", "16")

    assert done.returncode != 0
    assert "need 0 < --connections <= --few < --many" in done.stderr
