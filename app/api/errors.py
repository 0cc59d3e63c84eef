"""Exceptions to HTTP answers: always JSON ``{"detail": ...}``, never a trace or key material."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.api.deps import AmbiguousApiKeyHeader, MissingScope
from app.repositories.base import RepositoryUnavailable
from app.services.apikey_service import (
    InvalidApiKey,
    InvalidKeyRequest,
    KeyNotActive,
    UnknownKeyPrefix,
)

logger = logging.getLogger(__name__)

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "APIKey"}


def _detail(
    status_code: int, detail: object, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


async def _invalid_key(_request: Request, _exc: Exception) -> JSONResponse:
    # One answer for missing, malformed, unknown, revoked and expired: the reason is not
    # the caller's business and would help someone probing for keys.
    return _detail(401, "invalid or missing API key", UNAUTHORIZED_HEADERS)


async def _ambiguous_header(_request: Request, exc: Exception) -> JSONResponse:
    return _detail(400, f"send the {exc} header exactly once")


async def _missing_scope(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MissingScope)
    return _detail(403, f"this key lacks the {exc.scope!r} scope")


async def _unknown_prefix(_request: Request, _exc: Exception) -> JSONResponse:
    return _detail(404, "no key has this prefix")


async def _not_active(_request: Request, _exc: Exception) -> JSONResponse:
    return _detail(409, "the key is revoked or expired")


async def _bad_request(_request: Request, exc: Exception) -> JSONResponse:
    return _detail(422, str(exc))


async def _validation_failed(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # The default body echoes the input back; keep only where and what.
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    return _detail(422, errors)


async def _database_unavailable(_request: Request, _exc: Exception) -> JSONResponse:
    return _detail(503, "the key database is unavailable; try again shortly")


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled %s while serving a request", type(exc).__name__)
    return _detail(500, "internal server error")


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InvalidApiKey, _invalid_key)
    app.add_exception_handler(AmbiguousApiKeyHeader, _ambiguous_header)
    app.add_exception_handler(MissingScope, _missing_scope)
    app.add_exception_handler(UnknownKeyPrefix, _unknown_prefix)
    app.add_exception_handler(KeyNotActive, _not_active)
    app.add_exception_handler(InvalidKeyRequest, _bad_request)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(RepositoryUnavailable, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
