"""What a worker is actually running with: told once at startup, and by ``/readyz``.

The configured backend is not always the one in effect: ``redis`` or ``tiered`` without a
``REDIS_URL`` falls back to the memory backend (``cache_factories.shared_cache_or_memory``). An
operator reading "tiered" while every worker keeps its own dict would trust a revocation to
reach all workers when it does not, so both the startup event and ``/readyz`` name the backend
the container actually built. URLs are shown with their credentials masked.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.core.container import Container
from app.services.memory_cache_backend import InMemoryApiKeyCacheBackend

WORKERS_ENV_VAR = "GAME_API_WORKERS"
"""Set by ``app.server`` for its workers: how many gunicorn runs."""
MASK = "***"
FALLBACK_NOTE = "fallback: REDIS_URL not set"


def backend_in_effect(container: Container) -> str:
    """The cache backend the container built (resolving it, so any fallback warning is now)."""
    configured: str = container.config.APIKEY_CACHE_BACKEND()
    cache = container.apikey_cache()
    if configured != "memory" and isinstance(cache, InMemoryApiKeyCacheBackend):
        return f"memory ({FALLBACK_NOTE})"
    return configured


def masked_database_url(url: str) -> str:
    """The database URL with its password hidden (SQLAlchemy's own rendering)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return MASK  # not a URL SQLAlchemy can parse: show nothing of it


def masked_redis_url(url: str | None) -> str | None:
    """A Redis URL without its password (in the authority or a ``password=`` parameter)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{host}" if ":" in userinfo or not user else f"{MASK}@{host}"
        query = urlencode(
            [
                (name, MASK if name.lower() == "password" else value)
                for name, value in parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
        # Assembled by hand: ``urlunsplit`` drops the ``//`` of ``unix:///path``.
        shown = f"{parts.scheme}://{netloc}{parts.path}"
        shown += f"?{query}" if query else ""
        return shown + (f"#{parts.fragment}" if parts.fragment else "")
    except ValueError:
        return MASK


def service_version() -> str:
    try:
        return version("game-api")
    except PackageNotFoundError:
        return "unknown"


def worker_count() -> int | None:
    """gunicorn's worker count when serving under ``game-api serve``, else ``None``."""
    value = os.environ.get(WORKERS_ENV_VAR, "")
    return int(value) if value.isdigit() else None


def startup_facts(container: Container) -> dict[str, Any]:
    """The fields of the startup event."""
    config = container.config
    return {
        "version": service_version(),
        "cache_backend": backend_in_effect(container),
        "database_url": masked_database_url(config.DATABASE_URL()),
        "redis_topology": config.REDIS_TOPOLOGY(),
        "redis_url": masked_redis_url(config.REDIS_URL()),
        "redis_sentinels": config.REDIS_SENTINELS(),
        "redis_cluster_nodes": config.REDIS_CLUSTER_NODES(),
        "workers": worker_count(),
        "log_format": config.LOG_FORMAT(),
        "metrics": config.METRICS_ENABLED(),
        "access_log": config.ACCESS_LOG(),
    }
