"""The access line put together directly is the line structlog's console renderer writes."""

from __future__ import annotations

from typing import Any

import structlog
from hypothesis import given
from hypothesis import strategies as st

from app.core.access_lines import console_renderer
from app.core.log_setup import ACCESS_LOGGER

REFERENCE = structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
RENDER = console_renderer("info", "request", ACCESS_LOGGER)

values = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["a b", "x=y", "it's", 'say "hi"', "tab\there", "line\nbreak", ""]),
)


def access_event(fields: dict[str, Any], timestamp: str, with_request_id: bool) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "request", **fields}
    if with_request_id:
        event["request_id"] = "0123456789abcdef0123456789abcdef"
    event.update(level="info", logger=ACCESS_LOGGER, timestamp=timestamp, pid=4242)
    return event


@given(
    route=values,
    method=values,
    status=values,
    duration_ms=values,
    key_prefix=values,
    auth=values,
    with_request_id=st.booleans(),
)
def test_every_line_it_makes_is_structlogs_line(with_request_id: bool, **fields: Any) -> None:
    event = access_event(fields, "2026-11-29T17:00:00.123456Z", with_request_id)
    line = RENDER(dict(event))
    assert line is not None  # every value drawn here is one it was built for
    assert line == REFERENCE(None, "info", dict(event))


def test_a_typical_access_event_is_rendered_without_structlog() -> None:
    event = access_event(
        {
            "route": "/v1/me",
            "method": "GET",
            "status": 200,
            "duration_ms": 0.123,
            "key_prefix": "game_AAAAAAAA",
            "auth": "valid",
        },
        "2026-11-29T17:00:00.123456Z",
        with_request_id=True,
    )
    assert RENDER(dict(event)) == REFERENCE(None, "info", dict(event))


@given(value=st.one_of(st.lists(st.integers(), max_size=2), st.booleans(), st.binary(max_size=4)))
def test_values_it_was_not_built_for_are_handed_back(value: object) -> None:
    event = access_event({"route": value}, "2026-11-29T17:00:00.123456Z", with_request_id=False)
    assert RENDER(event) is None


def test_other_events_are_handed_back() -> None:
    event = access_event({"route": "/"}, "2026-11-29T17:00:00.123456Z", with_request_id=False)
    assert RENDER({**event, "event": "startup"}) is None
    assert RENDER({**event, "level": "warning"}) is None
    assert RENDER({**event, "timestamp": "not a plain stamp"}) is None
