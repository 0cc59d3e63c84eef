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

Secrets: driver loggers that would print statement parameters (key digests) at DEBUG are held at
WARNING whatever ``LOG_LEVEL`` says, as before.
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["console", "json"]

# Loggers whose DEBUG output carries SQL parameters, i.e. key digests.
PARAMETER_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool")
ACCESS_LOGGER = "game_api.access"
HANDLER_NAME = "game_api"


def _add_pid(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Which worker wrote the line: several share one stream under gunicorn."""
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _drop_color_message(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """uvicorn passes a terminal-coloured copy of some messages as an ``extra``: not a field."""
    event_dict.pop("color_message", None)
    return event_dict


def _shared_processors() -> list[Processor]:
    """What every line gets, whether it came from structlog or from a ``logging`` call."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
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


def configure_logging(level: str, log_format: LogFormat = "console") -> None:
    """Log to stderr at ``level`` in ``log_format``; driver parameters never logged."""
    configure_structlog()
    logging.config.dictConfig(logging_dict(level, log_format))
    sys.stderr.flush()
