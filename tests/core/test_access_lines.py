"""The access line made from a template is the line structlog's renderers write."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from app.core.access_lines import AccessLineMaker
from app.core.log_setup import ACCESS_LOGGER

REFERENCES = {
    "console": structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0),
    "json": structlog.processors.JSONRenderer(),
}
MAKERS = {
    fmt: AccessLineMaker(fmt, event="request", level="info", logger_name=ACCESS_LOGGER)
    for fmt in ("console", "json")
}

texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["/v1/me", "GET", "a b", "x=y", "it's", 'say "hi"', "tab\t", "new\nline", ""]),
)
optional_texts = st.one_of(st.none(), texts)


def reference_line(log_format: str, fields: dict[str, Any]) -> str:
    """What ``AccessLog`` wrote before: the event dict in its order, through the renderer."""
    event: dict[str, Any] = {
        "event": "request",
        "route": fields["route"],
        "method": fields["method"],
        "status": fields["status"],
        "duration_ms": fields["duration_ms"],
        "key_prefix": fields["key_prefix"],
        "auth": fields["auth"],
    }
    if fields["request_id"] is not None:
        event["request_id"] = fields["request_id"]
    event.update(
        level="info", logger=ACCESS_LOGGER, timestamp=fields["timestamp"], pid=fields["pid"]
    )
    return str(REFERENCES[log_format](None, "info", event))


@pytest.mark.parametrize("log_format", ["console", "json"])
@given(
    route=texts,
    method=texts,
    status=st.integers(min_value=100, max_value=599),
    duration_ms=st.floats(allow_nan=False, allow_infinity=False),
    key_prefix=optional_texts,
    auth=optional_texts,
    request_id=optional_texts,
    pid=st.integers(min_value=1, max_value=4_194_304),
)
def test_the_line_is_the_renderers_line(
    log_format: Literal["console", "json"], **fields: Any
) -> None:
    fields["timestamp"] = "2026-11-29T17:00:00.123456Z"
    made = MAKERS[log_format].line(**fields)
    assert made == reference_line(log_format, fields)


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_value_seen_again_is_written_the_same(log_format: Literal["console", "json"]) -> None:
    fields: dict[str, Any] = {
        "timestamp": "2026-11-29T17:00:00.000001Z",
        "pid": 7,
        "request_id": None,
        "route": "a b",
        "method": "GET",
        "status": 200,
        "duration_ms": 0.5,
        "key_prefix": "game_AAAAAAAA",
        "auth": "valid",
    }
    first = MAKERS[log_format].line(**fields)
    assert MAKERS[log_format].line(**fields) == first == reference_line(log_format, fields)
