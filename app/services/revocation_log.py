"""Following the event log: how every serving process learns of every revocation.

Each serving process polls the durable event log ("events after my last id") every
``poll_interval_seconds``, applies each event (the key service evicts its local copies and
re-writes the shared tombstone when nobody has yet), and renews its **lease** in the members
registry: ``lease_until = (when this poll started) + lease_seconds``.

Why this makes a revocation final, step by step:

1. A revocation commits its event in the same transaction as the change (the outbox), so no
   committed revocation can be missing from the log, and event ids become visible in order.
2. A poll that started at ``t0`` has seen every event committed before ``t0``.
3. A process uses what it holds locally (its cache entries, its record memo) only while
   ``now < t0 + lease_seconds`` for its last *fully successful* poll, that is, one whose events
   were all applied and whose registry renewal was written — so the registry never shows a
   lease shorter than the one the process acts on.
4. So ``lease_seconds`` after a revocation committed, every process has either applied it or
   stopped trusting its local copies — frozen, partitioned or slow alike, with no message
   needing to arrive. The revoker can finish earlier when every live member's registry row shows
   the event applied (or, for the tiered cache, the member acknowledged over pub/sub).

Clocks: a member's lease is written with its wall clock and compared with the revoker's, so
hosts must keep their clocks in step (NTP) to well within ``lease_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from app.repositories.base import EventLogRepository, KeyEvent

logger = logging.getLogger(__name__)

_BATCH = 500
_LEAVE_TIMEOUT_SECONDS = 2.0

_monotonic = time.monotonic


class RevocationFollower:
    """Applies the event log in this process and keeps its lease; see the module docstring."""

    def __init__(
        self,
        log: EventLogRepository,
        *,
        apply: Callable[[KeyEvent], Awaitable[None]],
        after_poll: Callable[[], Awaitable[None]] | None = None,
        member_id: str,
        description: str,
        poll_interval_seconds: float,
        lease_seconds: float,
        wall_clock: Callable[[], datetime],
        history_seconds: float = 0.0,
    ) -> None:
        """``history_seconds``: how far back a starting process reads the log (see
        ``poll_once``); 0 starts at its head."""
        if poll_interval_seconds <= 0 or lease_seconds <= poll_interval_seconds:
            raise ValueError("the lease must be longer than the poll interval, both positive")
        self._log = log
        self._apply = apply
        self._after_poll = after_poll
        self.member_id = member_id
        self._description = description
        self._poll_interval = poll_interval_seconds
        self._lease = lease_seconds
        self._wall_clock = wall_clock
        self._history = history_seconds
        self.lease_until = 0.0
        """Monotonic instant until which local copies may be used (read on every hit)."""
        self.applied_event_id: int | None = None
        self.last_success_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._first_poll: asyncio.Future[None] | None = None
        self._failing = False
        self.on_progress: Callable[[float], None] | None = None
        """Told after every poll how far behind the log this process is (seconds)."""

    @property
    def lease_seconds(self) -> float:
        return self._lease

    @property
    def poll_interval_seconds(self) -> float:
        return self._poll_interval

    def lease_valid(self) -> bool:
        return self.lease_until > _monotonic()

    def lag_seconds(self) -> float | None:
        """Seconds since the log was last applied in full (``None`` before the first time)."""
        return None if self.last_success_at is None else _monotonic() - self.last_success_at

    async def poll_once(self) -> None:
        """Apply every new event, then renew the lease; raises when either fails."""
        started_mono = _monotonic()
        started_wall = self._wall_clock()
        if self.applied_event_id is None:
            # A new process holds nothing, but a shared cache may still hold a stale "active"
            # value of a key revoked before it started (a failover can lose a tombstone the old
            # primary acknowledged): it applies the events of the last ``history_seconds`` too,
            # so it refuses such a value and writes the tombstone again.
            if self._history > 0:
                since = started_wall - timedelta(seconds=self._history)
                self.applied_event_id = await self._log.last_event_id_before(since)
            else:
                self.applied_event_id = await self._log.last_event_id()
        while True:
            events = await self._log.events_after(self.applied_event_id, _BATCH)
            for event in events:
                await self._apply(event)
                self.applied_event_id = event.id
            if len(events) < _BATCH:
                break
        await self._log.renew_member(
            self.member_id,
            self._description,
            self.applied_event_id,
            started_wall + timedelta(seconds=self._lease),
        )
        self.lease_until = started_mono + self._lease
        self.last_success_at = started_mono
        if self._failing:
            logger.info("event log reachable again: local copies trusted")
            self._failing = False
        if self._after_poll is not None:
            await self._after_poll()

    def ensure_running(self) -> None:
        """Start polling in the running loop (lazily: the container predates the loop)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        self._first_poll = loop.create_future()
        self._task = loop.create_task(self._run(), name="revocation-follower")

    async def wait_first_poll(self, timeout_seconds: float) -> bool:
        """Start if needed and wait (bounded) for the first poll; whether the lease is valid."""
        self.ensure_running()
        first = self._first_poll
        if first is not None and not first.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_seconds):
                    await asyncio.shield(first)
        return self.lease_valid()

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:
                    logger.warning(
                        "cannot apply the event log (%s): local copies are trusted for at most "
                        "%.1fs more",
                        type(exc).__name__,
                        max(0.0, self.lease_until - _monotonic()),
                    )
                    self._failing = True
            first = self._first_poll
            if first is not None and not first.done():
                first.set_result(None)
            if self.on_progress is not None:
                self.on_progress(self.lag_seconds() or 0.0)
            await asyncio.sleep(self._poll_interval)

    async def aclose(self) -> None:
        """Stop polling and leave the registry (best effort: a lapsed lease says the same)."""
        task, self._task = self._task, None
        self.lease_until = 0.0
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self.last_success_at is None:
            return  # never registered
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_LEAVE_TIMEOUT_SECONDS):
                await self._log.leave(self.member_id)
