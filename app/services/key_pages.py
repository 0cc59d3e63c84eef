"""Listing keys a page at a time, with an opaque cursor.

Pages are ordered by ``(created_at, prefix)``: a key's creation time never changes and the
prefix is unique, so the order is total and stable while keys are added, revoked or expire.
A cursor is the position of the last key of a page, and the next page starts strictly after it
(keyset pagination): each page is one indexed range read, as cheap for the thousandth page as
for the first, where ``OFFSET`` would read and discard every earlier row.

The cursor is base64url of ``[created_at, prefix]`` in JSON. It is opaque to clients (its form
may change); it is not a secret, since it names a key the caller has just been shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.domain.errors import InvalidListRequest
from app.repositories.base import ApiKeyRecord, ApiKeyRepository, KeyPosition
from app.services.page_cursor import decode_page_cursor, encode_page_cursor

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_NAME_PREFIX_LENGTH = 100
_MAX_CURSOR_LENGTH = 200
_PREFIX_MAX_LENGTH = 32


@dataclass(frozen=True, slots=True)
class KeyPage:
    """Keys of one page and the cursor of the next, ``None`` on the last page."""

    records: list[ApiKeyRecord]
    next_cursor: str | None


def encode_cursor(position: KeyPosition) -> str:
    created_at, prefix = position
    return encode_page_cursor([created_at.isoformat(), prefix])


def decode_cursor(cursor: str) -> KeyPosition:
    """The position a cursor names, or ``InvalidListRequest``: any string at all may arrive."""
    malformed = InvalidListRequest(
        "cursor is malformed: pass the next_cursor of a previous page unchanged, "
        "or leave it out to start from the first key",
        field="cursor",
    )
    value = decode_page_cursor(cursor, _MAX_CURSOR_LENGTH)
    if value is None or len(value) != 2 or not all(isinstance(part, str) for part in value):
        raise malformed
    created_text, prefix = value
    try:
        created_at = datetime.fromisoformat(created_text)
    except ValueError:
        raise malformed from None
    if created_at.tzinfo is None or not 0 < len(prefix) <= _PREFIX_MAX_LENGTH:
        raise malformed
    return created_at, prefix


def check_page_size(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidListRequest(f"limit must be between 1 and {MAX_PAGE_SIZE}", field="limit")


async def list_page(
    repository: ApiKeyRepository,
    *,
    limit: int,
    cursor: str | None,
    active_at: datetime | None,
    name_prefix: str | None,
) -> KeyPage:
    """Read one page; one row more than asked tells whether another page follows."""
    check_page_size(limit)
    if name_prefix is not None and len(name_prefix) > MAX_NAME_PREFIX_LENGTH:
        raise InvalidListRequest(
            f"name_prefix must be at most {MAX_NAME_PREFIX_LENGTH} characters", field="name_prefix"
        )
    after = None if cursor is None else decode_cursor(cursor)
    records = await repository.list_keys(
        limit=limit + 1, after=after, active_at=active_at, name_prefix=name_prefix or None
    )
    if len(records) <= limit:
        return KeyPage(records=records, next_cursor=None)
    page = records[:limit]
    last = page[-1]
    return KeyPage(records=page, next_cursor=encode_cursor((last.created_at, last.prefix)))
