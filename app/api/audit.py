"""The audit trail over HTTP (``GET /v1/audit``), and who a request's admin action is by."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.api.authentication import AuthenticatedRoute, caller_of, requires_scope
from app.api.deps import ApiKeyServiceDep
from app.api.error_schemas import VALIDATION_RESPONSE
from app.api.schemas import AuditListOut
from app.core.log_setup import REQUEST_ID
from app.domain.scopes import ADMIN
from app.repositories.base import AuditActor
from app.services.audit_pages import DEFAULT_AUDIT_PAGE_SIZE, MAX_TARGET_LENGTH
from app.services.key_pages import MAX_PAGE_SIZE

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=AuthenticatedRoute)


def current_request_id() -> str | None:
    """The id the telemetry middleware gave the request being served (its ``X-Request-ID``)."""
    return REQUEST_ID.get()


def audit_actor(request: Request) -> AuditActor:
    """The calling key's prefix and the request id, as plain values for the service."""
    return AuditActor(caller_of(request).prefix, current_request_id())


@router.get("", responses=VALIDATION_RESPONSE)
@requires_scope(ADMIN)
async def list_audit(
    service: ApiKeyServiceDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_AUDIT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(description="The next_cursor of the previous page")] = None,
    target: Annotated[
        str | None,
        Query(max_length=MAX_TARGET_LENGTH, description="Only the actions on this key prefix"),
    ] = None,
) -> AuditListOut:
    """Who created, revoked or rotated which key, newest first; follow ``next_cursor``."""
    page = await service.list_audit(limit=limit, cursor=cursor, target_prefix=target)
    return AuditListOut.of_page(page)
