"""``GET /v1/me``: who the caller is, for clients checking their key."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CurrentKey
from app.api.schemas import MeOut

router = APIRouter(prefix="/v1", tags=["me"])


@router.get("/me")
async def read_me(key: CurrentKey) -> MeOut:
    return MeOut.of(key)
