"""Request and response bodies: the one set of shapes for HTTP and every CLI ``--json``.

No response model has a field for a digest; only ``CreatedKeyOut.key`` carries a plaintext,
once, at creation. Dates are ISO 8601 in UTC with a ``Z`` (pydantic's JSON mode), wherever
they are printed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from app.domain.errors import InvalidKeyRequest
from app.domain.scopes import KNOWN_SCOPES
from app.repositories.base import ApiKeyRecord, AuditEntry
from app.services.apikey_service import (
    MAX_EXPIRES_IN_SECONDS,
    MAX_GRACE_SECONDS,
    AuthenticatedKey,
    CreatedKey,
    RevocationResult,
    RotationResult,
    validate_scopes,
)
from app.services.audit_pages import AuditPage
from app.services.cache_protocol import InvalidationReport, InvalidationScope
from app.services.key_pages import KeyPage
from app.services.revocation_finality import Finality


def _known_scope(scope: str) -> str:
    """The service's own check and words, so HTTP and CLI refuse a scope alike."""
    try:
        validate_scopes([scope])
    except InvalidKeyRequest as exc:
        raise PydanticCustomError("unknown_scope", str(exc)) from None
    return scope


Scope = Annotated[
    str,
    AfterValidator(_known_scope),
    # An enum in the document, so /docs offers the scopes instead of a free "string".
    WithJsonSchema({"type": "string", "enum": sorted(KNOWN_SCOPES)}),
]


class CreateKeyRequest(BaseModel):
    # The examples are what /docs pre-fills: executed as they are, they create a key.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "game-server", "scopes": ["read"], "expires_in": 86_400}]
        },
    )

    name: str = Field(
        min_length=1,
        max_length=100,
        description="Letters, digits, spaces or ._:@/-",
        examples=["game-server"],
    )
    scopes: list[Scope] = Field(default_factory=list, max_length=10, examples=[["read"]])
    expires_in: int | None = Field(
        default=None,
        ge=1,
        le=MAX_EXPIRES_IN_SECONDS,
        description="Lifetime in seconds; no expiry when left out",
        examples=[86_400],
    )


class RotateKeyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"grace_seconds": 3600}]}
    )

    grace_seconds: int = Field(
        default=0,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="How long the old key keeps working after the rotation",
        examples=[3600],
    )


class MeOut(BaseModel):
    prefix: str
    scopes: list[str]
    expires_at: datetime | None

    @classmethod
    def of(cls, key: AuthenticatedKey) -> MeOut:
        return cls(prefix=key.prefix, scopes=sorted(key.scopes), expires_at=key.expires_at)


class KeyOut(BaseModel):
    prefix: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    active: bool

    @classmethod
    def of(cls, record: ApiKeyRecord, now: datetime) -> KeyOut:
        return cls(
            prefix=record.prefix,
            name=record.name,
            scopes=list(record.scopes),
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            active=record.is_active(now),
        )


class KeyListOut(BaseModel):
    keys: list[KeyOut]
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the next page; null on the last page",
    )

    @classmethod
    def of(
        cls, records: Iterable[ApiKeyRecord], now: datetime, next_cursor: str | None = None
    ) -> KeyListOut:
        return cls(keys=[KeyOut.of(record, now) for record in records], next_cursor=next_cursor)

    @classmethod
    def of_page(cls, page: KeyPage, now: datetime) -> KeyListOut:
        return cls.of(page.records, now, page.next_cursor)


class CreatedKeyOut(BaseModel):
    key: str = Field(description="The key itself: shown this once, store it now")
    prefix: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None

    @classmethod
    def of(cls, created: CreatedKey) -> CreatedKeyOut:
        record = created.record
        return cls(
            key=created.plaintext,
            prefix=record.prefix,
            name=record.name,
            scopes=list(record.scopes),
            created_at=record.created_at,
            expires_at=record.expires_at,
        )


class CacheInvalidationOut(BaseModel):
    confirmed: bool
    scope: InvalidationScope
    detail: str
    acknowledged: int | None
    expected: int | None

    @classmethod
    def of(cls, report: InvalidationReport) -> CacheInvalidationOut:
        return cls(
            confirmed=report.confirmed,
            scope=report.scope,
            detail=report.detail,
            acknowledged=report.acknowledged,
            expected=report.expected,
        )


class FinalityOut(BaseModel):
    """How the revocation became final: every serving process refuses the key from now on."""

    final: bool
    how: str = Field(
        description="'acknowledged by every live member', 'shared tombstone' or 'leases lapsed'"
    )
    acknowledged: int
    expected: int
    lapsed: list[str] = Field(description="members (host:pid) whose lease had to lapse")
    seconds: float

    @classmethod
    def of(cls, finality: Finality) -> FinalityOut:
        return cls(
            final=finality.final,
            how=finality.how,
            acknowledged=finality.acknowledged,
            expected=finality.expected,
            lapsed=list(finality.lapsed),
            seconds=round(finality.seconds, 4),
        )


class RevokedKeyOut(KeyOut):
    cache_invalidation: CacheInvalidationOut
    finality: FinalityOut

    @classmethod
    def of_result(cls, result: RevocationResult, now: datetime) -> RevokedKeyOut:
        return cls(
            **KeyOut.of(result.record, now).model_dump(),
            cache_invalidation=CacheInvalidationOut.of(result.invalidation),
            finality=FinalityOut.of(result.finality),
        )


class RotatedKeyOut(CreatedKeyOut):
    old_key: KeyOut
    cache_invalidation: CacheInvalidationOut
    finality: FinalityOut

    @classmethod
    def of_result(cls, result: RotationResult, now: datetime) -> RotatedKeyOut:
        return cls(
            **CreatedKeyOut.of(result.new_key).model_dump(),
            old_key=KeyOut.of(result.old_record, now),
            cache_invalidation=CacheInvalidationOut.of(result.invalidation),
            finality=FinalityOut.of(result.finality),
        )


class AuditEntryOut(BaseModel):
    """One admin action. Prefixes only: never a key or its digest."""

    id: int
    occurred_at: datetime
    actor_prefix: str = Field(description="The calling key's prefix, or 'cli' (command line)")
    action: str = Field(description="'created', 'revoked' or 'rotated'")
    target_prefix: str
    detail: str | None = Field(description="For 'rotated', the successor's prefix")
    request_id: str | None = Field(description="The HTTP request's X-Request-ID")
    finality: str | None = Field(
        description="How the change became final everywhere; null until known (or for 'created')"
    )

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        return cls(
            id=entry.id,
            occurred_at=entry.occurred_at,
            actor_prefix=entry.actor_prefix,
            action=entry.action,
            target_prefix=entry.target_prefix,
            detail=entry.detail,
            request_id=entry.request_id,
            finality=entry.finality,
        )


class AuditListOut(BaseModel):
    entries: list[AuditEntryOut]
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the next (older) page; null on the last page",
    )

    @classmethod
    def of_page(cls, page: AuditPage) -> AuditListOut:
        return cls(
            entries=[AuditEntryOut.of(entry) for entry in page.entries],
            next_cursor=page.next_cursor,
        )
