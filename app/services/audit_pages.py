"""Reading the audit trail a page at a time, newest first, with an opaque cursor.

Audit rows only ever get appended, with increasing ids, so a row's id is its position: a
cursor is the id of the last row of a page, and the next page holds the rows below it (keyset
pagination, like ``key_pages``): one indexed range read per page, however long the trail.
Rows appended while a client pages are above its cursor and never shift a page.

The cursor is base64url of ``["audit", id]`` in JSON: opaque to clients, and tagged so a keys
listing's cursor is refused here rather than misread.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.domain.errors import InvalidListRequest
from app.repositories.base import ApiKeyRepository, AuditEntry
from app.services.key_pages import check_page_size
from app.services.page_cursor import decode_page_cursor, encode_page_cursor

DEFAULT_AUDIT_PAGE_SIZE = 100
MAX_TARGET_LENGTH = 32
_MAX_CURSOR_LENGTH = 100
_TAG = "audit"


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Rows of one page, newest first, and the cursor of the next, ``None`` on the last."""

    entries: list[AuditEntry]
    next_cursor: str | None


def encode_audit_cursor(audit_id: int) -> str:
    return encode_page_cursor([_TAG, audit_id])


def decode_audit_cursor(cursor: str) -> int:
    """The id a cursor names, or ``InvalidListRequest``: any string at all may arrive."""
    value = decode_page_cursor(cursor, _MAX_CURSOR_LENGTH)
    if (
        value is None
        or len(value) != 2
        or value[0] != _TAG
        or type(value[1]) is not int
        or value[1] < 1
    ):
        raise InvalidListRequest(
            "cursor is malformed: pass the next_cursor of a previous audit page unchanged, "
            "or leave it out to start from the newest entry",
            field="cursor",
        )
    audit_id: int = value[1]
    return audit_id


async def audit_page(
    repository: ApiKeyRepository,
    *,
    limit: int,
    cursor: str | None,
    target_prefix: str | None,
) -> AuditPage:
    """Read one page; one row more than asked tells whether another page follows."""
    check_page_size(limit)
    if target_prefix is not None and len(target_prefix) > MAX_TARGET_LENGTH:
        raise InvalidListRequest(
            f"target must be at most {MAX_TARGET_LENGTH} characters", field="target"
        )
    before_id = None if cursor is None else decode_audit_cursor(cursor)
    entries = await repository.list_audit(
        limit=limit + 1, before_id=before_id, target_prefix=target_prefix or None
    )
    if len(entries) <= limit:
        return AuditPage(entries=entries, next_cursor=None)
    page = entries[:limit]
    return AuditPage(entries=page, next_cursor=encode_audit_cursor(page[-1].id))
