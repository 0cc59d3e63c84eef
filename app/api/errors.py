"""Exceptions to HTTP answers: always JSON ``{"detail": ...}``, never a trace or key material.

One handler for the service's own failures (``GameApiError`` knows its status and its public
message), one for request validation and one for anything unexpected.

A 422 has one shape whoever refused the body (``app/api/error_schemas.py``): a list of
``{loc, msg, type}``. FastAPI's validation errors keep their ``loc`` (without the echoed input);
the service's own refusals (``InvalidKeyRequest``) get ``loc: ["body", <field>]``, so a client
finds the field at fault in one place either way.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.domain.errors import GameApiError, InvalidKeyRequest

logger = logging.getLogger(__name__)


_REFUSED_BEFORE_THE_BODY = frozenset({400, 401, 403})


def _declares_a_body(request: Request) -> bool:
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"


def _service_validation_problem(exc: GameApiError) -> list[dict[str, object]]:
    """The service's 422 in the validation shape: the field it names, its message."""
    field = exc.field if isinstance(exc, InvalidKeyRequest) else None
    where = exc.location if isinstance(exc, InvalidKeyRequest) else "body"
    location: list[object] = [where] if field is None else [where, field]
    return [{"loc": location, "msg": exc.public_detail(), "type": "value_error"}]


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GameApiError)
    if exc.status_code == 422:
        return JSONResponse({"detail": _service_validation_problem(exc)}, status_code=422)
    headers = exc.response_headers() or {}
    if exc.status_code in _REFUSED_BEFORE_THE_BODY and _declares_a_body(request):
        # The route refused the caller before reading a byte of the body: close the
        # connection rather than let the server drain whatever the client still sends.
        headers = {**headers, "Connection": "close"}
    return JSONResponse(
        {"detail": exc.public_detail()}, status_code=exc.status_code, headers=headers or None
    )


async def _validation_failed(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # The default body echoes the input back; keep only where and what.
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled %s while serving a request", type(exc).__name__)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GameApiError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(Exception, _unexpected)
