"""The application factory: builds the container, wires it, owns the lifespan.

``create_app()`` wires the container itself rather than in the lifespan, because httpx's
``ASGITransport`` (and so every in-process test) never runs the lifespan.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI

from app.api import audit, bench_routes, health, keys, me
from app.api.authentication import (
    API_KEY_SCHEME_NAME,
    AUTHENTICATION_ATTRIBUTE,
    KeyHeader,
    RouteAuthentication,
)
from app.api.docs import install_docs
from app.api.errors import register_error_handlers
from app.api.lean_app import LeanFastAPI
from app.api.openapi_document import complete_openapi
from app.api.request_limits import RequestLimits, RequestLimitsMiddleware
from app.api.request_telemetry import RequestTelemetry, RequestTelemetryMiddleware
from app.api.telemetry import METRICS_PATH, Telemetry, attach_telemetry, metrics_endpoint
from app.api.worker_id import WorkerIdMiddleware
from app.core.container import Container, build_container
from app.core.log_setup import flush_access_log
from app.core.resources import close_container_resources
from app.core.runtime_info import startup_facts
from configs import Settings, load_settings

logger = logging.getLogger(__name__)

WIRED_MODULES = ["app.api.authentication", "app.api.deps", "app.api.health", "app.api.keys"]
BENCH_MODULES = ["app.api.bench_routes"]


def _lifespan(container: Container) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Resolving the cache here (inside startup_facts) makes a backend fallback's warning
        # appear when the worker starts, not at its first request.
        structlog.get_logger("game_api.startup").info("startup", **startup_facts(container))
        telemetry: Telemetry | None = app.state.telemetry
        if telemetry is not None:
            attach_telemetry(telemetry, container)
        # Join the members and apply the event log before serving: local copies are trusted
        # only under a lease (see app/services/revocation_log.py).
        await container.apikey_service().start()
        try:
            yield
        finally:
            flush_access_log()
            if telemetry is not None:
                telemetry.flush()  # what the last interval counted
            await close_container_resources(container)

    return lifespan


def _openapi_with_key_scheme(app: FastAPI, header_name: str) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document with the API-key scheme under the configured header name.

    Authenticated routes name the scheme in their ``security`` (``AuthenticatedRoute``); this
    declares it, so ``/docs`` has its "Authorize" button and sends the key where it belongs.
    ``complete_openapi`` adds the answers no route declares itself (the edge's refusals).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = complete_openapi(generate())
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes[API_KEY_SCHEME_NAME] = {
                "type": "apiKey",
                "in": "header",
                "name": header_name,
                "description": "An API key issued by `POST /v1/keys` or `game-api keys create`.",
            }
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Add ``router``'s routes to the app itself, as ``@app.get`` would.

    ``include_router`` (FastAPI 0.165) keeps each router behind an ``_IncludedRouter`` that
    every request walks into (matching, scope updates, the effective-route context): about a
    tenth of a worker's time on ``/healthz`` in the profile. The project's routers carry their
    prefix, tags and route class themselves and are included without options, so their routes
    are complete as built and are added as they are.
    """
    app.router.routes.extend(router.routes)


def create_app(
    settings: Settings | None = None,
    container: Container | None = None,
    *,
    edge_in_server: bool = False,
) -> FastAPI:
    """The FastAPI app over ``container`` (built from ``settings`` when not given).

    ``edge_in_server``: the server does the edge's per-request work itself, as ``game-api
    serve``'s worker (``app.server_worker``) does: it notes each request (its id, metrics and
    access line, with ``app.state.request_telemetry``) in its own request cycle, and bounds
    header blocks in its protocol and bodies with ``RequestLimitsMiddleware`` wrapped around the
    app only for requests that announce one. The app then has neither ASGI layer, which saves
    their frames (and a wrapped ``send``) on every request. Any other server needs them.
    """
    if container is None:
        container = build_container(settings if settings is not None else load_settings())
    with_bench_routes: bool = container.config.BENCH_ROUTES()
    container.wire(modules=WIRED_MODULES + (BENCH_MODULES if with_bench_routes else []))
    header_name: str = container.config.APIKEY_HEADER_NAME()

    app = LeanFastAPI(
        title="game-api",
        summary="A game's public API, authenticated with API keys",
        version="0.1.0",
        lifespan=_lifespan(container),
        # Served by install_docs with packaged assets: the defaults load them from a CDN.
        docs_url=None,
        redoc_url=None,
        # FastAPI's native OpenTelemetry hooks look up the global providers on every request
        # even when none is configured; this service exports no traces, so skip them (and
        # LeanFastAPI then leaves out their exception layer).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.container = container
    setattr(app, AUTHENTICATION_ATTRIBUTE, RouteAuthentication(KeyHeader.named(header_name)))
    register_error_handlers(app)
    routers = [health.router, me.router, keys.router, audit.router]
    if with_bench_routes:
        # Right after /v1/me, so the ceiling route is matched one step later than the route it
        # is the ceiling of, not a dozen: route matching is linear.
        routers.insert(routers.index(me.router) + 1, bench_routes.router)
    for router in routers:
        add_routes(app, router)
    install_docs(app)
    if container.config.EXPOSE_WORKER_ID():
        app.add_middleware(WorkerIdMiddleware)
    telemetry = Telemetry() if container.config.METRICS_ENABLED() else None
    app.state.telemetry = telemetry
    if telemetry is not None:
        app.add_api_route(METRICS_PATH, metrics_endpoint(telemetry), include_in_schema=False)
    request_telemetry = RequestTelemetry(telemetry, access_log_on=container.config.ACCESS_LOG())
    app.state.request_telemetry = request_telemetry
    app.state.edge_in_server = edge_in_server
    if not edge_in_server:
        # Limits hold before routing and authentication; only the request telemetry is outside
        # them, so a refused request has its id, its count and its access line too.
        app.add_middleware(
            RequestLimitsMiddleware, limits=RequestLimits.from_settings(container.config())
        )
        app.add_middleware(RequestTelemetryMiddleware, request_telemetry=request_telemetry)
    app.openapi = _openapi_with_key_scheme(app, header_name)  # type: ignore[method-assign]
    return app
