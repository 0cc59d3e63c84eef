"""Key management routes; every one needs a key with the ``admin`` scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, status

from app.api.authentication import AuthenticatedRoute, requires_scope
from app.api.deps import ApiKeyServiceDep
from app.api.schemas import (
    CacheInvalidationOut,
    CreatedKeyOut,
    CreateKeyRequest,
    KeyListOut,
    KeyOut,
    RevokedKeyOut,
    RotatedKeyOut,
    RotateKeyRequest,
)
from app.domain.errors import UnknownKeyPrefix
from app.domain.keys import is_valid_prefix
from app.domain.scopes import ADMIN
from app.services.apikey_service import utc_now

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=AuthenticatedRoute)

KeyPrefix = Annotated[str, Path(description="The public prefix, e.g. game_Ab3dE9xZ")]


def _checked(prefix: str) -> str:
    """A malformed prefix names no key: 404 without asking the database."""
    if not is_valid_prefix(prefix):
        raise UnknownKeyPrefix(prefix)
    return prefix


@router.post("", status_code=status.HTTP_201_CREATED)
@requires_scope(ADMIN)
async def create_key(body: CreateKeyRequest, service: ApiKeyServiceDep) -> CreatedKeyOut:
    created = await service.create(body.name, body.scopes, body.expires_in)
    return CreatedKeyOut.of(created)


@router.get("")
@requires_scope(ADMIN)
async def list_keys(service: ApiKeyServiceDep) -> KeyListOut:
    now = utc_now()
    return KeyListOut(keys=[KeyOut.of(record, now) for record in await service.list_keys()])


@router.post("/{prefix}/revoke")
@requires_scope(ADMIN)
async def revoke_key(prefix: KeyPrefix, service: ApiKeyServiceDep) -> RevokedKeyOut:
    result = await service.revoke(_checked(prefix))
    key = KeyOut.of(result.record, utc_now())
    return RevokedKeyOut(
        **key.model_dump(), cache_invalidation=CacheInvalidationOut.of(result.invalidation)
    )


@router.post("/{prefix}/rotate", status_code=status.HTTP_201_CREATED)
@requires_scope(ADMIN)
async def rotate_key(
    prefix: KeyPrefix,
    service: ApiKeyServiceDep,
    body: Annotated[RotateKeyRequest | None, Body()] = None,
) -> RotatedKeyOut:
    grace_seconds = 0 if body is None else body.grace_seconds
    result = await service.rotate(_checked(prefix), grace_seconds)
    created = CreatedKeyOut.of(result.new_key)
    return RotatedKeyOut(
        **created.model_dump(),
        old_key=KeyOut.of(result.old_record, utc_now()),
        cache_invalidation=CacheInvalidationOut.of(result.invalidation),
    )
