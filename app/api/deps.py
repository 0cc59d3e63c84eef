"""Request dependencies as ``Annotated`` aliases for the routes that need the service itself.

Authentication is not a dependency: see ``app.api.authentication``.
"""

# No ``from __future__ import annotations``: dependency-injector reads the ``Provide`` markers
# from the live signature.

from typing import Annotated

from fastapi import Depends

from app.api.authentication import apikey_service
from app.services.apikey_service import ApiKeyService


async def _apikey_service_on_the_loop() -> ApiKeyService:
    """The service, resolved on the event loop.

    ``Depends(Provide[...])`` would hand FastAPI the marker, a plain synchronous callable, and
    FastAPI runs every synchronous dependency through the thread pool: a thread hand-off on
    every request. Wrapping the injected function in an ``async def`` keeps it on the loop.
    """
    return apikey_service()


ApiKeyServiceDep = Annotated[ApiKeyService, Depends(_apikey_service_on_the_loop)]
