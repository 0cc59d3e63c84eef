"""Call deadlines on one timer per loop: late calls are cut, others finish, outside cancels stay."""

from __future__ import annotations

import asyncio

import pytest

from app.services.call_deadlines import CallDeadlines

TIMEOUT = 0.05
RESOLUTION = 0.01


async def test_a_call_that_answers_in_time_gives_its_answer() -> None:
    deadlines = CallDeadlines(TIMEOUT, RESOLUTION)

    async def answer() -> str:
        await asyncio.sleep(0)
        return "value"

    assert await deadlines.run(answer) == "value"


async def test_a_call_past_its_deadline_is_cut_with_timeout_error() -> None:
    deadlines = CallDeadlines(TIMEOUT, RESOLUTION)
    never = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(TimeoutError):
        await deadlines.run(never.wait)

    waited = loop.time() - started
    assert TIMEOUT <= waited < TIMEOUT + RESOLUTION + 0.5  # generous: a busy machine is late
    assert asyncio.current_task() is not None
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_only_the_overdue_calls_are_cut() -> None:
    deadlines = CallDeadlines(TIMEOUT, RESOLUTION)
    never = asyncio.Event()
    release = asyncio.Event()

    async def quick() -> str:
        await release.wait()
        return "quick"

    stuck = asyncio.create_task(deadlines.run(never.wait))
    fast = asyncio.create_task(deadlines.run(quick))
    release.set()

    assert await fast == "quick"
    with pytest.raises(TimeoutError):
        await stuck


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = CallDeadlines(60.0, RESOLUTION)
    entered = asyncio.Event()
    never = asyncio.Event()

    async def wait_forever() -> None:
        entered.set()
        await never.wait()

    call = asyncio.create_task(deadlines.run(wait_forever))
    await entered.wait()
    call.cancel()

    with pytest.raises(asyncio.CancelledError):
        await call


def test_a_bound_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CallDeadlines(0, RESOLUTION)
    with pytest.raises(ValueError):
        CallDeadlines(TIMEOUT, 0)
