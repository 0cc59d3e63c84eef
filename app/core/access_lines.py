"""The access line, made as structlog's renderers would make it, at a fraction of the cost.

The access event is the one line written for every request. Through structlog it costs a
worker more than 10 µs with the console renderer (level padding, styles, a ``repr`` per value, a
sort) and about 4 µs as JSON — a tenth of what a cached ``GET /v1/me`` costs in all. Its fields
are few and fixed (route template, method, status, duration, key prefix, outcome, request id,
pid, timestamp), and most of their values repeat from request to request, so the line is put
together directly from a template, with the text of each string value kept once it has been
worked out. What is written does not change: ``AccessLineMaker`` produces, character for
character, what ``ConsoleRenderer(colors=False, pad_event_to=0)`` or ``JSONRenderer()`` makes of
the same event dict (``tests/core/test_access_lines.py`` compares them on generated events).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Literal

import structlog

# A string value containing any of these is written as its ``repr`` (ConsoleRenderer's rule).
_CONSOLE_QUOTED = frozenset(" \t=\r\n\"'")
_MAX_REMEMBERED_TEXTS = 4_096
# Written as they are in both formats (inside quotes in JSON): what request ids and timestamps
# are made of. Such values differ on every line, so remembering their text would only churn.
_PLAIN = re.compile(r"[A-Za-z0-9._:+-]+")


def _console_text(value: str) -> str:
    return value if _CONSOLE_QUOTED.isdisjoint(value) else repr(value)


def _json_number(value: float) -> str:
    """``json.dumps`` of a float: its ``repr`` when finite (``NaN``/``Infinity`` otherwise)."""
    return repr(value) if value - value == 0 else json.dumps(value)


class _TextMemo:
    """The rendered text of string values seen before (routes, methods, outcomes, prefixes);
    ``unique`` renders a value that differs on every line (a request id, a timestamp)."""

    def __init__(self, render: Callable[[str], str], plain_form: str) -> None:
        self._render = render
        self._plain_form = plain_form
        self._texts: dict[str, str] = {}

    def unique(self, value: str | None, none_text: str) -> str:
        if value is None:
            return none_text
        if _PLAIN.fullmatch(value):
            return self._plain_form.format(value)
        return self._render(value)

    def __call__(self, value: str | None, none_text: str) -> str:
        if value is None:
            return none_text
        text = self._texts.get(value)
        if text is None:
            text = self._render(value)
            if len(self._texts) >= _MAX_REMEMBERED_TEXTS:
                self._texts.clear()  # a flood of distinct values: start again, stay bounded
            self._texts[value] = text
        return text


class AccessLineMaker:
    """Makes the access event's line in the configured format; see the module docstring."""

    def __init__(
        self, log_format: Literal["console", "json"], *, event: str, level: str, logger_name: str
    ) -> None:
        self._json = log_format == "json"
        self._event, self._level, self._logger_name = event, level, logger_name
        if self._json:
            self._text = _TextMemo(json.dumps, '"{}"')
        else:
            self._text = _TextMemo(_console_text, "{}")
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
            self._after_timestamp = head[len(marker) :]
        self._json_tail = (
            f'"level": {json.dumps(level)}, "logger": {json.dumps(logger_name)}, "timestamp": '
        )
        self._json_head = f'{{"event": {json.dumps(event)}, "route": '

    def line(
        self,
        *,
        timestamp: str,
        pid: int,
        request_id: str | None,
        route: str,
        method: str,
        status: int,
        duration_ms: float,
        key_prefix: str | None,
        auth: str | None,
    ) -> str:
        """The line for one request; ``request_id=None`` leaves the key out, as the chain does."""
        text = self._text
        if self._json:
            request = (
                "" if request_id is None else f'"request_id": {text.unique(request_id, "null")}, '
            )
            return (
                f"{self._json_head}{text(route, 'null')}, "
                f'"method": {text(method, "null")}, "status": {status!r}, '
                f'"duration_ms": {_json_number(duration_ms)}, '
                f'"key_prefix": {text(key_prefix, "null")}, "auth": {text(auth, "null")}, '
                f"{request}{self._json_tail}{text.unique(timestamp, 'null')}, "
                f'"pid": {pid!r}}}'
            )
        request = "" if request_id is None else f" request_id={text.unique(request_id, 'None')}"
        return (
            f"{timestamp}{self._after_timestamp} auth={text(auth, 'None')} "
            f"duration_ms={duration_ms!r} key_prefix={text(key_prefix, 'None')} "
            f"method={text(method, 'None')} pid={pid!r}{request} route={text(route, 'None')} "
            f"status={status!r}"
        )
