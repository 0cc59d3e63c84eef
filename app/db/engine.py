"""The async engine and session factory, built once per process from ``DATABASE_URL``."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

# aiosqlite logs every statement with its bound parameters at DEBUG; those include key digests.
_PARAMETER_LOGGING_DRIVERS = ("aiosqlite",)


def _keep_parameters_out_of_driver_logs() -> None:
    for name in _PARAMETER_LOGGING_DRIVERS:
        driver_logger = logging.getLogger(name)
        if driver_logger.level < logging.INFO:  # unset (inheriting) or DEBUG
            driver_logger.setLevel(logging.INFO)


def build_engine(url: str, timeout_seconds: float = 2.0) -> AsyncEngine:
    """An engine whose connection attempts and statements are bounded by ``timeout_seconds``.

    SQLite gets WAL and a busy timeout so several gunicorn workers can read while one writes.
    PostgreSQL connections are pre-pinged so a restarted server costs one retry, not an error.
    """
    parsed = make_url(url)
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        connect_args["timeout"] = timeout_seconds
    elif parsed.get_driver_name() == "asyncpg":
        connect_args["timeout"] = timeout_seconds
        connect_args["command_timeout"] = timeout_seconds
        options["pool_pre_ping"] = True
        options["pool_timeout"] = timeout_seconds
    # Bound parameters include key digests: keep them out of SQLAlchemy's logs and errors.
    engine = create_async_engine(url, connect_args=connect_args, hide_parameters=True, **options)
    if parsed.get_backend_name() == "sqlite":
        _keep_parameters_out_of_driver_logs()
        busy_ms = int(timeout_seconds * 1000)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

    return engine


def build_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Records are copied out of the session before it closes, so nothing needs refreshing.
    return async_sessionmaker(engine, expire_on_commit=False)
