"""Request dependencies as ``Annotated`` aliases: the API key header, the service, the caller.

Routes declare what they need (``CurrentKey``, ``AdminKey``, ``ApiKeyServiceDep``) and stay thin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from dependency_injector.wiring import Provide, inject
from fastapi import Depends, Security
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from app.core.container import Container
from app.domain.errors import AmbiguousApiKeyHeader, InvalidApiKey, MissingScope
from app.domain.scopes import ADMIN
from app.services.apikey_service import ApiKeyService, AuthenticatedKey

API_KEY_SCHEME_NAME = "ApiKeyAuth"
HEADER_NAME_STATE = "apikey_header_name"


class ApiKeyAuthentication(APIKeyHeader):
    """The API-key security scheme and the authentication itself, in one dependency.

    Being an ``APIKeyHeader`` keeps the scheme in the OpenAPI document (so ``/docs`` has its
    "Authorize" button); authenticating in the same call saves FastAPI solving a second
    dependency on every request, the hottest path of the service.

    FastAPI fixes a scheme's header name when the route is declared; the name here is a setting,
    so it is read per request from ``app.state`` (and patched into the OpenAPI document by
    ``create_app``), which keeps one declaration for every app built in the process.
    """

    async def __call__(self, request: HTTPConnection) -> AuthenticatedKey:  # type: ignore[override]
        header_name = getattr(request.app.state, HEADER_NAME_STATE, self.model.name)
        values = request.headers.getlist(header_name)
        if len(values) > 1:
            # A proxy that appends its own key header, or a client smuggling a second one,
            # must not have either value silently chosen.
            raise AmbiguousApiKeyHeader(header_name)
        if not values or not values[0]:
            raise InvalidApiKey("missing")
        return await _apikey_service().authenticate(values[0])


api_key_authentication = ApiKeyAuthentication(
    name="X-API-Key",
    scheme_name=API_KEY_SCHEME_NAME,
    description="An API key issued by `POST /v1/keys` or `game-api keys create`.",
    auto_error=False,
)


@inject
def _apikey_service(service: ApiKeyService = Provide[Container.apikey_service]) -> ApiKeyService:
    return service


async def _apikey_service_on_the_loop() -> ApiKeyService:
    """The service, resolved on the event loop.

    ``Depends(Provide[...])`` would hand FastAPI the marker, a plain synchronous callable, and
    FastAPI runs every synchronous dependency through the thread pool: a thread hand-off on
    every request, which profiling showed to be a quarter of the event loop's time on
    ``/v1/me``. Wrapping the injected function in an ``async def`` keeps it on the loop.
    """
    return _apikey_service()


ApiKeyServiceDep = Annotated[ApiKeyService, Depends(_apikey_service_on_the_loop)]

CurrentKey = Annotated[AuthenticatedKey, Security(api_key_authentication)]


def require_scope(scope: str) -> Callable[[AuthenticatedKey], Awaitable[AuthenticatedKey]]:
    """A dependency admitting only keys that carry ``scope``."""

    async def key_with_scope(key: CurrentKey) -> AuthenticatedKey:
        if scope not in key.scopes:
            raise MissingScope(scope)
        return key

    return key_with_scope


AdminKey = Annotated[AuthenticatedKey, Depends(require_scope(ADMIN))]
