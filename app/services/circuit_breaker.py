"""A circuit breaker: the state machine alone, knowing nothing of what it guards.

Closed, it lets every call through and counts consecutive failures. After ``failure_threshold``
of them it opens for ``reset_after_seconds``: callers skip the guarded thing entirely. Then it
lets exactly one probe through; the probe's success closes it, its failure opens it again.
``app.services.guarded_cache_backend`` puts it around a cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed → open after repeated failures → one probe → closed again (module docstring)."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_after_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_after_seconds <= 0:
            raise ValueError("reset_after_seconds must be positive")
        self._failure_threshold = failure_threshold
        self._reset_after = reset_after_seconds
        self._clock = clock
        self._consecutive_failures = 0
        self._open_until: float | None = None
        self._probe_in_flight = False

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    @property
    def reset_after_seconds(self) -> float:
        return self._reset_after

    def allow(self) -> bool:
        """Whether a call that may be skipped should be tried now (closed, or the one probe)."""
        if self._open_until is None:
            return True
        if self._clock() >= self._open_until and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> bool:
        """A call succeeded; ``True`` when that closed an open circuit."""
        was_open = self._open_until is not None
        self._consecutive_failures = 0
        self._open_until = None
        self._probe_in_flight = False
        return was_open

    def record_failure(self) -> bool:
        """A call failed; ``True`` when that opened a closed circuit."""
        self._consecutive_failures += 1
        self._probe_in_flight = False
        if self._open_until is None and self._consecutive_failures < self._failure_threshold:
            return False
        opened = self._open_until is None
        self._open_until = self._clock() + self._reset_after
        return opened

    def abandon(self) -> None:
        """A call ended with no verdict (its caller went away): free the probe slot."""
        self._probe_in_flight = False
