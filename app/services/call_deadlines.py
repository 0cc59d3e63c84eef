"""Deadlines for many short awaits, on one timer per event loop instead of one per call.

Every shared-cache call is bounded (a hung Redis must cost a request a few hundred milliseconds,
never its whole budget). ``asyncio.timeout()`` does it by arming a timer for every call and
cancelling it afterwards: a heap push, a cancelled handle to sweep, a few microseconds — more than
the rest of a Redis hit's Python work. A cache call's bound need not be exact to the microsecond,
so here each call only notes its deadline, and one timer per loop, running only while calls are
under way, looks at them every ``resolution`` seconds and cancels the overdue ones. A call is
therefore cut between its deadline and one resolution later.

The cut is made as ``asyncio.timeout`` makes it: the call's task is cancelled, and the
``CancelledError`` becomes ``TimeoutError`` only when this cut caused it (``Task.uncancel``
brings the task's cancellation count back to what it was when the call began); a cancellation
from outside — a client that hung up — stays a cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class CallDeadlines:
    """Bounds awaited calls to ``timeout_seconds``, checked every ``resolution_seconds``."""

    def __init__(self, timeout_seconds: float, resolution_seconds: float) -> None:
        if timeout_seconds <= 0 or resolution_seconds <= 0:
            raise ValueError("timeout and resolution must be positive")
        self._timeout = timeout_seconds
        self._resolution = resolution_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        # Calls under way: their task, deadline (loop time) and the task's cancellation count
        # when the call began.
        self._running: dict[asyncio.Task[Any], tuple[float, int]] = {}
        self._cut: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def timeout_seconds(self) -> float:
        return self._timeout

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``await operation()``, or ``TimeoutError`` once it has run past the deadline."""
        task = asyncio.current_task()
        if task is None:  # not in a task (a bare coroutine driven by hand): no bound to enforce
            return await operation()
        loop = task.get_loop()
        if loop is not self._loop:
            self._adopt(loop)
        cancelling = task.cancelling()
        self._running[task] = (loop.time() + self._timeout, cancelling)
        if self._timer is None:
            self._timer = loop.call_later(self._resolution, self._cut_overdue)
        try:
            return await operation()
        except asyncio.CancelledError:
            if task in self._cut and task.uncancel() <= cancelling:
                raise TimeoutError(f"no answer within {self._timeout:.3f} s") from None
            raise
        finally:
            self._running.pop(task, None)
            self._cut.discard(task)

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """A new loop (tests run one per test): what the old one had under way is gone."""
        if self._timer is not None:
            self._timer.cancel()
        self._loop, self._timer = loop, None
        self._running.clear()
        self._cut.clear()

    def _cut_overdue(self) -> None:
        self._timer = None
        if not self._running or self._loop is None:
            return
        now = self._loop.time()
        for task, (deadline, _) in list(self._running.items()):
            if deadline <= now and task not in self._cut:
                self._cut.add(task)
                task.cancel()
        self._timer = self._loop.call_later(self._resolution, self._cut_overdue)
