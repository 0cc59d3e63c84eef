"""One log format for every line the service prints: ours, uvicorn's, gunicorn's, SQLAlchemy's.

structlog renders through the standard ``logging`` module rather than beside it: our own events
(``structlog.get_logger(...)``) and every library's ``logging`` records meet in one handler whose
``structlog.stdlib.ProcessorFormatter`` gives both the same keys (``timestamp``, ``level``,
``logger``, ``pid``, ``event``, plus whatever is bound in ``structlog.contextvars`` — the request
id while a request is served) and the same renderer: JSON lines for a log pipeline
(``LOG_FORMAT=json``), plain ``key=value`` console lines for a person (``console``).

Two callers: the command line (``configure_logging``, in the gunicorn master before it forks, so
every worker inherits the structlog configuration) and gunicorn itself, which re-runs
``logging.config.dictConfig`` with ``gunicorn_logconfig(...)`` (its ``logconfig_dict`` setting):
without it gunicorn would install its own plain-text handlers on ``gunicorn.error``, which the
uvicorn worker then copies onto ``uvicorn.error``.

One exception, for cost: the access event, written once per request, is rendered by the same
renderer with the same keys but without the ``logging`` module or structlog's processor chain
(``AccessLog``, with the line put together by ``access_lines``), and written in one ``write`` per
event-loop pass (``BatchedLineWriter``).

Secrets: driver loggers that would print statement parameters (key digests) at DEBUG are held at
WARNING whatever ``LOG_LEVEL`` says, as before.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import sys
import time
from contextvars import ContextVar
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from app.core.access_lines import AccessLineMaker

LogFormat = Literal["console", "json"]

# Loggers whose DEBUG output carries SQL parameters, i.e. key digests.
PARAMETER_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool")
ACCESS_LOGGER = "game_api.access"
HANDLER_NAME = "game_api"


REQUEST_ID: ContextVar[str | None] = ContextVar("game_api_request_id", default=None)
"""The id of the request being served (set by the request middleware; task-local)."""


def _add_request_id(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """A plain ``ContextVar`` rather than ``bind_contextvars``: a set and a reset per request
    cost a tenth of structlog's binding, and only lines actually written read it."""
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


_process_id = os.getpid()


def _refresh_pid() -> None:
    global _process_id
    _process_id = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def process_id() -> int:
    """This process's id, read once per process (and again in a forked child) rather than
    with a system call per call: ``os.getpid`` is one on this glibc."""
    return _process_id


def _add_pid(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Which worker wrote the line: several share one stream under gunicorn."""
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _drop_color_message(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """uvicorn passes a terminal-coloured copy of some messages as an ``extra``: not a field."""
    event_dict.pop("color_message", None)
    return event_dict


def _shared_processors(*, logger_name: bool = True) -> list[Processor]:
    """What every line gets, whether it came from structlog or from a ``logging`` call."""
    return [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.stdlib.add_log_level,
        *([structlog.stdlib.add_logger_name] if logger_name else []),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_pid,
    ]


def _renderer(log_format: LogFormat) -> Processor:
    if log_format == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)


def formatter(log_format: LogFormat) -> structlog.stdlib.ProcessorFormatter:
    """The ``logging.Formatter`` that renders every record in ``log_format``."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_shared_processors(),
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _renderer(log_format),
        ],
    )


def configure_structlog() -> None:
    """structlog hands its events to ``logging`` (rendered by ``formatter``), loggers cached."""
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def logging_dict(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A ``dictConfig`` dict: one stderr handler on the root, gunicorn's loggers routed to it.

    ``gunicorn.access`` gets no handler: the access event is ours (one per request, with the
    route template and the key prefix), and the uvicorn worker copies that logger's handlers onto
    ``uvicorn.access``, whose own line would be a second, poorer access log.
    """
    quiet = {name: {"level": "WARNING"} for name in PARAMETER_LOGGERS}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": formatter, "log_format": log_format}},
        "handlers": {
            HANDLER_NAME: {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": [HANDLER_NAME]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [HANDLER_NAME], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
            # Alembic announces each of its plugins at INFO on every start: noise.
            "alembic.runtime.plugins": {"level": "WARNING"},
            **quiet,
        },
    }


def gunicorn_logconfig(level: str, log_format: LogFormat) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: the same configuration, applied by gunicorn's own setup."""
    return logging_dict(level, log_format)


class BatchedLineWriter:
    """A structlog logger that writes the lines of one event-loop pass in one ``write``.

    The access event is the one line written for every request; a ``write`` and ``flush`` (a
    system call) each would be a measurable share of a cached ``/v1/me``. Lines are gathered
    and written when the loop next gets round (``call_soon``), or at once outside a loop.
    """

    def __init__(self, stream: TextIO, max_pending: int = 256) -> None:
        self._stream = stream
        self._max_pending = max_pending
        self._pending: list[str] = []

    def msg(self, message: str) -> None:
        pending = self._pending
        pending.append(message)
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()
        elif len(pending) >= self._max_pending:
            self.flush()

    debug = info = warning = warn = error = critical = exception = msg

    def flush(self) -> None:
        if self._pending:
            lines = "\n".join(self._pending) + "\n"
            self._pending.clear()
            self._stream.write(lines)
            self._stream.flush()


class AccessLog:
    """Writes the access event: the same keys and renderer as every other line, made directly.

    It runs once per request, so it skips ``logging`` (a ``LogRecord``, the caller lookup, a
    handler lock and a copy of the event), structlog's processor chain and its renderer: the
    line, with the keys the chain would add (``request_id``, ``level``, ``logger``,
    ``timestamp`` to the microsecond, ``pid``), is made by ``access_lines.AccessLineMaker`` and
    handed to a ``BatchedLineWriter``. ``bench/telemetry_cost.py`` measures what is left.
    """

    def __init__(self, stream: TextIO, log_format: LogFormat) -> None:
        self._writer = BatchedLineWriter(stream)
        self._maker = AccessLineMaker(
            log_format, event="request", level="info", logger_name=ACCESS_LOGGER
        )
        self._second = -1
        self._second_text = ""

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((now - second) * 1_000_000):06d}Z"

    def event(
        self,
        *,
        route: str,
        method: str,
        status: int,
        duration_ms: float,
        key_prefix: str | None,
        auth: str | None,
    ) -> None:
        self._writer.msg(
            self._maker.line(
                timestamp=self._timestamp(),
                pid=process_id(),
                request_id=REQUEST_ID.get(),
                route=route,
                method=method,
                status=status,
                duration_ms=duration_ms,
                key_prefix=key_prefix,
                auth=auth,
            )
        )

    def flush(self) -> None:
        self._writer.flush()


class _AccessViaStructlog:
    """The access event before ``configure_access_log`` (an app in a test): plain structlog."""

    def event(self, **fields: Any) -> None:
        structlog.get_logger(ACCESS_LOGGER).info("request", **fields)


_access_log: AccessLog | None = None
_access_configured = False


def configure_access_log(stream: TextIO, level: str, log_format: LogFormat) -> None:
    """Where access events go; nowhere when ``level`` is above INFO (they are INFO events)."""
    global _access_log, _access_configured
    enabled = logging.getLevelName(level) <= logging.INFO
    _access_log = AccessLog(stream, log_format) if enabled else None
    _access_configured = True


def flush_access_log() -> None:
    """Write any access lines still gathered for this loop pass (tests, shutdown)."""
    if _access_log is not None:
        _access_log.flush()


def reset_access_log() -> None:
    """Back to plain structlog (tests)."""
    global _access_log, _access_configured
    _access_log, _access_configured = None, False


def access_log() -> AccessLog | _AccessViaStructlog | None:
    """The access event's writer once configured (``None`` when the level leaves access events
    out); plain structlog before, so an app in a test still logs them."""
    if _access_configured:
        return _access_log
    return _AccessViaStructlog()


def configure_logging(level: str, log_format: LogFormat = "console") -> None:
    """Log to stderr at ``level`` in ``log_format``; driver parameters never logged."""
    configure_structlog()
    logging.config.dictConfig(logging_dict(level, log_format))
    configure_access_log(sys.stderr, level, log_format)
    sys.stderr.flush()
