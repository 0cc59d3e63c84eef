"""The access event's console line, made as structlog would make it, at a fraction of the cost.

The access event is the one line written for every request. structlog's ``ConsoleRenderer``
spends over 10 µs on it (level padding, styles, a ``repr`` per value, a sort) — a tenth of
what a cached ``GET /v1/me`` costs a worker in all. Its fields are few and fixed (route
template, method, status, duration, key prefix, outcome, request id, pid, timestamp), so the
line can be put together directly. What is written must not change: the renderer here produces,
character for character, what ``ConsoleRenderer(colors=False, pad_event_to=0)`` makes of the
same event dict (``tests/core/test_access_lines.py`` compares them on generated events), and
hands any value it was not built for back to structlog (``None`` = "not mine"). JSON lines need
no such thing: ``JSONRenderer`` is ``json.dumps``, which runs in C.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

AccessLineRenderer = Callable[[dict[str, Any]], str | None]

# The keys ``ConsoleRenderer`` puts before the ``key=value`` pairs rather than among them.
_CONSOLE_HEAD_KEYS = frozenset({"timestamp", "level", "event", "logger"})
# A string value containing any of these is written as its ``repr`` (structlog's rule).
_CONSOLE_QUOTED = frozenset(" \t=\r\n\"'")


def console_renderer(level: str, event: str, logger_name: str) -> AccessLineRenderer:
    """``ConsoleRenderer(colors=False, pad_event_to=0)``'s line for events of this level,
    event name and logger (the part before the pairs is rendered once, by structlog itself)."""
    reference = structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    marker = "\x00"
    head = str(
        reference(
            None,
            level,
            {"timestamp": marker, "level": level, "event": event, "logger": logger_name},
        )
    )
    if not head.startswith(marker):
        raise RuntimeError("structlog's console layout changed: the timestamp is not first")
    after_timestamp = head[len(marker) :]
    quoted = _CONSOLE_QUOTED

    # The pairs' order for each set of keys met (the access event has one or two).
    orders: dict[tuple[str, ...], tuple[str, ...]] = {}

    def render(event_dict: dict[str, Any]) -> str | None:
        if (
            event_dict.get("level") != level
            or event_dict.get("event") != event
            or event_dict.get("logger") != logger_name
        ):
            return None
        timestamp = event_dict.get("timestamp")
        if type(timestamp) is not str or not quoted.isdisjoint(timestamp):
            return None
        keys = tuple(event_dict)
        order = orders.get(keys)
        if order is None:
            if len(orders) > 8 or not all(type(key) is str for key in keys):
                return None
            order = orders[keys] = tuple(sorted(set(keys) - _CONSOLE_HEAD_KEYS))
        if not order:
            return None
        pairs = []
        for key in order:
            value = event_dict[key]
            kind = type(value)
            if kind is str:
                pairs.append(f"{key}={value if quoted.isdisjoint(value) else repr(value)}")
            elif kind is int or kind is float or value is None:
                pairs.append(f"{key}={value!r}")
            else:
                return None
        return f"{timestamp}{after_timestamp} {' '.join(pairs)}"

    return render
