"""FastAPI without the two layers of its stack that pass this app's every request through.

FastAPI (0.165, the version the lock pins) builds every app's stack as
``ServerErrorMiddleware`` → ``ExceptionTelemetryMiddleware`` → ``AppBodyLimitMiddleware`` → the
app's own middleware → ``ExceptionMiddleware`` → ``AsyncExitStackMiddleware`` → the router. Two
of those do nothing here but cost a coroutine frame each on every request (about 0.6 µs
together on ``/healthz``, measured in process with ``bench.edge_cost``'s connections):

- ``ExceptionTelemetryMiddleware`` hands an exception to FastAPI's native OpenTelemetry, which
  ``create_app`` switches off: the service notes its requests itself
  (``app.api.request_telemetry``);
- ``AppBodyLimitMiddleware`` acts only when the app sets a ``max_body_size`` (or a parent app
  put its limit in the scope); this app sets none, because bodies are bounded before any route
  by ``RequestLimitsMiddleware``.

``LeanFastAPI`` leaves a layer out only while it is such a pass-through: with native telemetry
on, or an app-wide ``max_body_size``, FastAPI's stack is kept as it is.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi._body_limit import AppBodyLimitMiddleware
from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware
from starlette.types import ASGIApp

_TELEMETRY_SIGNALS = ("tracing", "metrics", "logs")


class LeanFastAPI(FastAPI):
    """``FastAPI`` whose stack skips the pass-through layers named in the module docstring."""

    def __init__(self, **options: Any) -> None:
        telemetry = options.get("telemetry")
        # Off only when every signal was switched off by name: FastAPI's defaults are on.
        self.native_telemetry_off = isinstance(telemetry, dict) and all(
            telemetry.get(signal) is False for signal in _TELEMETRY_SIGNALS
        )
        super().__init__(**options)

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        outermost: Any = stack  # ServerErrorMiddleware: FastAPI puts the other two inside it
        while self._passes_through(inner := outermost.app):
            outermost.app = inner.app
        return stack

    def _passes_through(self, layer: object) -> bool:
        """Whether ``layer`` is one of the two, with nothing to do in this app."""
        if isinstance(layer, ExceptionTelemetryMiddleware):
            return self.native_telemetry_off
        if isinstance(layer, AppBodyLimitMiddleware):
            return self.max_body_size is None
        return False
