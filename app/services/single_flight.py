"""One in-flight load per key per process; concurrent callers share its result.

The load runs as its own task and callers await it through ``asyncio.shield``: a caller that is
cancelled (a client that hung up) stops waiting without cancelling the load for the others.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Deduplicates concurrent loads of the same key within one event loop."""

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        task = self._inflight.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(load())
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._discard, key))
        return await asyncio.shield(task)

    def forget(self, key: K) -> None:
        """Let the next caller start a fresh load (the one in flight may have read stale data)."""
        self._inflight.pop(key, None)

    def forget_all(self) -> None:
        """``forget`` every key."""
        self._inflight.clear()

    def _discard(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter may have been cancelled
