"""``GET /v1/me``: who the caller is, for clients checking their key."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.authentication import AuthenticatedRoute, caller_of, requires_key
from app.api.schemas import MeOut

router = APIRouter(prefix="/v1", tags=["me"], route_class=AuthenticatedRoute)


@router.get("/me")
@requires_key()
async def read_me(request: Request) -> MeOut:
    return MeOut.of(caller_of(request))
