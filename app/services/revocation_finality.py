"""When a revocation (or rotation) may say it is final everywhere.

Two things must hold before revoke returns success (see ``revocation_log`` for the lease
argument):

* **shared copies** — for backends with a shared tier (``redis``, ``tiered``), the tombstone is in
  Redis: written by the revoker, or by any member that applied the event and marked it done in
  the log; or, when nobody could write it, every live member has applied the event, so each
  refuses the key whatever Redis still holds (and re-writes the tombstone once it can);
* **local copies** — for backends that keep copies in process memory (``memory``, the tiered
  L1), every live member has applied the event (its registry row), acknowledged it over the
  invalidation channel, or let its lease lapse. ``lease_seconds`` after the commit every member
  has done one or the other, so this part needs no answer from anybody past that point.

The answer says which way finality was reached, who acknowledged and who lapsed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.domain.errors import RepositoryUnavailable
from app.repositories.base import EventLogRepository

logger = logging.getLogger(__name__)

_CHECK_INTERVAL_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class Finality:
    """How a revocation became final (or why it could not be proven in time)."""

    final: bool
    how: str
    acknowledged: int = 0
    expected: int = 0
    lapsed: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    seconds: float = 0.0
    shared_done: bool = True
    detail: str = field(default="")


@dataclass(frozen=True, slots=True)
class FinalityNeeds:
    """What the backend in use holds, and so what finality must cover."""

    shared: bool
    local: bool


async def await_finality(
    log: EventLogRepository,
    event_id: int,
    *,
    needs: FinalityNeeds,
    shared_done_by_us: bool,
    acknowledged_by: frozenset[str],
    own_member_id: str | None,
    committed_at: datetime,
    lease_seconds: float,
    timeout_seconds: float,
    wall_clock: Callable[[], datetime],
) -> Finality:
    """Wait until the revocation in ``event_id`` is final, up to ``timeout_seconds``."""
    started = time.monotonic()
    deadline = started + timeout_seconds
    leases_lapse_at = committed_at + timedelta(seconds=lease_seconds)
    shared_done = shared_done_by_us or not needs.shared
    pending: tuple[str, ...] = ()
    expected = acknowledged = 0
    # Members once waited for that then dropped out of the live set: their lease lapsed.
    waited_for: dict[str, str] = {}
    lapsed: dict[str, str] = {}
    while True:
        now = wall_clock()
        registry_read = False
        try:
            if not shared_done:
                state = await log.event_state(event_id)
                shared_done = state is not None and state.shared_done
            if needs.local or not shared_done:
                members = [
                    member
                    for member in await log.live_members(now)
                    if member.member_id != own_member_id
                ]
                expected = len(members)
                waiting = [
                    member
                    for member in members
                    if member.applied_event_id < event_id
                    and member.member_id not in acknowledged_by
                ]
                pending = tuple(member.description for member in waiting)
                acknowledged = expected - len(waiting)
                live = {member.member_id for member in members}
                for member_id, description in waited_for.items():
                    if member_id not in live:
                        lapsed[member_id] = description
                waited_for = {member.member_id: member.description for member in waiting}
                if not shared_done and all(m.applied_event_id >= event_id for m in members):
                    shared_done = True  # each one refuses the key whatever Redis still holds
            registry_read = True
        except RepositoryUnavailable:
            pass
        elapsed = time.monotonic() - started
        local_done = not needs.local or (registry_read and not pending)
        if shared_done and local_done:
            how = "acknowledged by every live member" if needs.local else "shared tombstone"
            return Finality(
                final=True,
                how="leases lapsed" if lapsed else how,
                acknowledged=acknowledged,
                expected=expected + len(lapsed),
                lapsed=tuple(lapsed.values()),
                seconds=elapsed,
            )
        if shared_done and now >= leases_lapse_at:
            # Past the lease: whoever has not applied the event trusts nothing local any more.
            return Finality(
                final=True,
                how="leases lapsed",
                acknowledged=acknowledged,
                expected=expected + len(lapsed),
                lapsed=pending + tuple(lapsed.values()),
                seconds=elapsed,
            )
        if time.monotonic() >= deadline:
            missing = [] if shared_done else ["the shared cache could not be brought in line"]
            if pending:
                missing.append(f"{len(pending)} member(s) had not applied it")
            return Finality(
                final=False,
                how="not proven",
                acknowledged=acknowledged,
                expected=expected,
                pending=pending,
                seconds=elapsed,
                shared_done=shared_done,
                detail="; ".join(missing) or "the event log could not be read",
            )
        await asyncio.sleep(_CHECK_INTERVAL_SECONDS)
