"""Key management routes; every one needs a key with the ``admin`` scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, status

from app.api.audit import audit_actor, current_request_id
from app.api.authentication import AuthenticatedRoute, caller_of, requires_scope
from app.api.deps import ApiKeyServiceDep
from app.api.error_schemas import VALIDATION_RESPONSE, Responses, error_response
from app.api.schemas import (
    CreatedKeyOut,
    CreateKeyRequest,
    KeyListOut,
    RevokedKeyOut,
    RotatedKeyOut,
    RotateKeyRequest,
)
from app.domain.keys import checked_prefix
from app.domain.scopes import ADMIN
from app.services.apikey_service import utc_now
from app.services.key_pages import DEFAULT_PAGE_SIZE, MAX_NAME_PREFIX_LENGTH, MAX_PAGE_SIZE

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=AuthenticatedRoute)

NOT_FOUND: Responses = {404: error_response("No key has this prefix (a malformed prefix included)")}
NOT_ACTIVE: Responses = {409: error_response("The key is revoked, expired or already rotated")}

KeyPrefix = Annotated[str, Path(description="The public prefix, e.g. game_Ab3dE9xZ")]


@router.post("", status_code=status.HTTP_201_CREATED, responses=VALIDATION_RESPONSE)
@requires_scope(ADMIN)
async def create_key(
    request: Request, body: CreateKeyRequest, service: ApiKeyServiceDep
) -> CreatedKeyOut:
    """The caller may grant only scopes it holds, and no longer life than its own (422)."""
    created = await service.create(
        body.name,
        body.scopes,
        body.expires_in,
        issuer=caller_of(request),
        request_id=current_request_id(),
    )
    return CreatedKeyOut.of(created)


@router.get("")
@requires_scope(ADMIN)
async def list_keys(
    service: ApiKeyServiceDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(description="The next_cursor of the previous page")] = None,
    active: Annotated[bool, Query(description="Only keys neither revoked nor expired")] = False,
    name_prefix: Annotated[
        str | None,
        Query(max_length=MAX_NAME_PREFIX_LENGTH, description="Only names starting with this"),
    ] = None,
) -> KeyListOut:
    """One page, oldest first; follow ``next_cursor`` until it is null."""
    page = await service.list_keys(
        limit=limit, cursor=cursor, active_only=active, name_prefix=name_prefix
    )
    return KeyListOut.of_page(page, utc_now())


@router.post("/{prefix}/revoke", responses=NOT_FOUND)
@requires_scope(ADMIN)
async def revoke_key(
    request: Request, prefix: KeyPrefix, service: ApiKeyServiceDep
) -> RevokedKeyOut:
    result = await service.revoke(checked_prefix(prefix), actor=audit_actor(request))
    return RevokedKeyOut.of_result(result, utc_now())


@router.post(
    "/{prefix}/rotate",
    status_code=status.HTTP_201_CREATED,
    responses={**NOT_FOUND, **NOT_ACTIVE, **VALIDATION_RESPONSE},
)
@requires_scope(ADMIN)
async def rotate_key(
    request: Request,
    prefix: KeyPrefix,
    service: ApiKeyServiceDep,
    body: Annotated[RotateKeyRequest | None, Body()] = None,
) -> RotatedKeyOut:
    grace_seconds = 0 if body is None else body.grace_seconds
    result = await service.rotate(
        checked_prefix(prefix),
        grace_seconds,
        issuer=caller_of(request),
        actor=audit_actor(request),
    )
    return RotatedKeyOut.of_result(result, utc_now())
