"""The opaque cursor of every paginated listing: base64url of a small JSON array.

Opaque to clients (its form may change) and not a secret (it names a row the caller was just
shown); decoding accepts any string at all and answers ``None`` for anything it did not issue,
so each listing only checks the shape of its own position.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


def encode_page_cursor(position: list[Any]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_page_cursor(cursor: str, max_length: int) -> list[Any] | None:
    """The JSON array a cursor carries, or ``None`` when it is not a cursor at all."""
    if not cursor or len(cursor) > max_length:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        return None
    return value if isinstance(value, list) else None
