"""Authentication at the edge of the route, before FastAPI solves any dependency.

Every request to ``/v1/me`` used to pay for FastAPI resolving a security dependency (a quarter of
the event loop's time in the profile) on top of the key check itself. Here a route declares what
it needs with ``@requires_key()`` or ``@requires_scope(...)``; its ``AuthenticatedRoute`` reads
the header straight from the ASGI scope, authenticates once, checks the scope and puts the
caller in the request scope, where ``caller_of(request)`` finds it. FastAPI then solves only the
route's own parameters.

The OpenAPI document still carries the API-key scheme on every such route (and the 401/403
answers), so ``/docs`` keeps its working "Authorize" button.
"""

# No ``from __future__ import annotations``: dependency-injector's ``@inject`` reads the
# ``Provide`` marker from the live signature.

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from dependency_injector.wiring import Provide, inject
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from app.api.error_schemas import error_response
from app.core.container import Container
from app.domain.errors import AmbiguousApiKeyHeader, GameApiError, InvalidApiKey, MissingScope
from app.services.apikey_service import ApiKeyService, AuthenticatedKey

API_KEY_SCHEME_NAME = "ApiKeyAuth"
DEFAULT_HEADER_NAME = "X-API-Key"
AUTHENTICATION_ATTRIBUTE = "game_api_route_authentication"
"""The app's attribute holding its ``RouteAuthentication``: on the app object itself rather than
``app.state``, whose reads go through a Python ``__getattr__`` on every request."""
CALLER_SCOPE_KEY = "game_api.caller"
AUTH_OUTCOME_SCOPE_KEY = "game_api.auth_outcome"
"""Why a request was refused (``malformed``, ``unknown``, ...), for metrics and the access log."""
ANY_SCOPE = ""
"""What ``requires_key()`` asks for: any valid key, whatever its scopes."""

_REQUIREMENT_ATTRIBUTE = "__game_api_required_scope__"
_OPTIONAL_WHITESPACE = b" \t"

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class KeyHeader:
    """The key header's name as configured (for messages) and as on the wire (to match)."""

    name: str
    wire_name: bytes

    @classmethod
    def named(cls, name: str) -> "KeyHeader":
        return cls(name=name, wire_name=name.lower().encode("latin-1"))


DEFAULT_KEY_HEADER = KeyHeader.named(DEFAULT_HEADER_NAME)


def requires_scope(scope: str) -> Callable[[Endpoint], Endpoint]:
    """Declare that an endpoint needs a valid key carrying ``scope`` (403 without it)."""

    def declare(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _REQUIREMENT_ATTRIBUTE, scope)
        return endpoint

    return declare


def requires_key() -> Callable[[Endpoint], Endpoint]:
    """Declare that an endpoint needs a valid key, whatever its scopes."""
    return requires_scope(ANY_SCOPE)


def caller_of(request: HTTPConnection) -> AuthenticatedKey:
    """The authenticated caller of a request served by an ``AuthenticatedRoute``."""
    caller: AuthenticatedKey = request.scope[CALLER_SCOPE_KEY]
    return caller


def presented_key(headers: list[tuple[bytes, bytes]], header: KeyHeader) -> str:
    """The one value of the key header, trimmed of optional whitespace (RFC 9110 §5.5).

    Missing or empty → ``InvalidApiKey``; sent twice → ``AmbiguousApiKeyHeader`` (a proxy that
    appends its own key header, or a client smuggling a second one, must not have either value
    silently chosen).
    """
    header_name = header.wire_name
    found: bytes | None = None
    for name, value in headers:
        if name == header_name:
            if found is not None:
                raise AmbiguousApiKeyHeader(header.name)
            found = value
    if found is None:
        raise InvalidApiKey("missing")
    found = found.strip(_OPTIONAL_WHITESPACE)
    if not found:
        raise InvalidApiKey("missing")
    return found.decode("latin-1")


def refusal_outcome(exc: GameApiError) -> str:
    """The authentication outcome an error stands for (a bounded set of metric labels)."""
    if isinstance(exc, InvalidApiKey):
        return exc.reason
    if isinstance(exc, AmbiguousApiKeyHeader):
        return "ambiguous"
    return "unavailable"  # the database (or what stands in for it) could not answer


@inject
def apikey_service(service: ApiKeyService = Provide[Container.apikey_service]) -> ApiKeyService:
    return service


@dataclass(slots=True)
class RouteAuthentication:
    """What an app's authenticated routes need per request, found with one attribute read.

    The service is resolved through the container's wiring on the app's first authenticated
    request (so provider overrides made before it apply) and kept: resolving it per request
    cost as much as the key check itself.
    """

    header: KeyHeader
    service: ApiKeyService | None = None

    def resolved_service(self) -> ApiKeyService:
        service = self.service
        if service is None:
            service = self.service = apikey_service()
        return service


class AuthenticatedRoute(APIRoute):
    """A route whose endpoint declared a key requirement; see the module docstring.

    An endpoint on a router of this class without a declaration is refused when the route is
    built: forgetting ``@requires_key()`` must not make a route public.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        required = getattr(endpoint, _REQUIREMENT_ATTRIBUTE, None)
        if required is None:
            raise TypeError(
                f"{endpoint.__qualname__} is on an authenticated router but declares neither "
                "@requires_key() nor @requires_scope(...)"
            )
        self.required_scope: str = required
        responses = dict(kwargs.pop("responses", None) or {})
        responses.setdefault(401, error_response("Missing, malformed, unknown or revoked key"))
        responses.setdefault(400, error_response("The key header was sent more than once"))
        if required != ANY_SCOPE:
            responses.setdefault(403, error_response(f"The key lacks the {required!r} scope"))
        openapi_extra = dict(kwargs.pop("openapi_extra", None) or {})
        openapi_extra.setdefault("security", [{API_KEY_SCHEME_NAME: []}])
        super().__init__(path, endpoint, responses=responses, openapi_extra=openapi_extra, **kwargs)

    def handle(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        # A plain function handing back the coroutine to run: a process-local hit (most
        # requests) then costs no coroutine of its own, only the route's.
        # Per request, not cached on the route: FastAPI may share route objects between apps.
        authentication: RouteAuthentication | None = getattr(
            scope["app"], AUTHENTICATION_ATTRIBUTE, None
        )
        if authentication is None:  # an app not built by create_app: the defaults
            authentication = RouteAuthentication(DEFAULT_KEY_HEADER)
        try:
            key = presented_key(scope["headers"], authentication.header)
            service = authentication.service or authentication.resolved_service()
            caller = service.admit_from_memory(key)
        except GameApiError as exc:
            scope[AUTH_OUTCOME_SCOPE_KEY] = refusal_outcome(exc)
            raise
        if caller is None:
            return self._authenticate_and_handle(service, key, scope, receive, send)
        self._admit(caller, scope)
        return APIRoute.handle(self, scope, receive, send)

    async def _authenticate_and_handle(
        self, service: ApiKeyService, key: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Everything but a process-local hit: the service's whole check, then the route."""
        try:
            caller = await service.authenticate(key)
        except GameApiError as exc:
            scope[AUTH_OUTCOME_SCOPE_KEY] = refusal_outcome(exc)
            raise
        self._admit(caller, scope)
        await APIRoute.handle(self, scope, receive, send)

    def _admit(self, caller: AuthenticatedKey, scope: Scope) -> None:
        """The caller into the request scope, or ``MissingScope`` (403)."""
        if self.required_scope and self.required_scope not in caller.scopes:
            scope[AUTH_OUTCOME_SCOPE_KEY] = "missing_scope"
            raise MissingScope(self.required_scope)
        scope[CALLER_SCOPE_KEY] = caller
