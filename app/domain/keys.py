"""The API-key format: generate, parse, checksum and digest.

A key looks like ``game_Ab3dE9xZ_<22 random chars><6 checksum chars>``:

* ``game_`` is a fixed type prefix, so secret scanners can recognise a leaked key;
* the 8 characters after it form the public identifier (with ``game_``, the *prefix* shown in
  listings and logs and stored in the cache value);
* 22 base62 characters carry 130 random bits;
* a base62 CRC32 checksum over everything before it lets the service (and scanners) reject a
  mistyped or forged key offline, before any cache or database work.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass, field

from app.domain.digests import sha256
from app.domain.errors import GameApiError, UnknownKeyPrefix

TYPE_PREFIX = "game_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 8
SECRET_LENGTH = 22
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(TYPE_PREFIX) + ID_LENGTH + 1 + SECRET_LENGTH + CHECKSUM_LENGTH

_KEY_PATTERN = re.compile(
    rf"({TYPE_PREFIX}[0-9A-Za-z]{{{ID_LENGTH}}})_([0-9A-Za-z]{{{SECRET_LENGTH}}})"
    rf"([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})"
)
_PREFIX_PATTERN = re.compile(rf"{TYPE_PREFIX}[0-9A-Za-z]{{{ID_LENGTH}}}")


class MalformedApiKey(GameApiError, ValueError):
    """The text is not a well-formed game-api key (shape or checksum): refused like any bad key."""

    status_code = 401
    public_message = "invalid or missing API key"


@dataclass(frozen=True, slots=True)
class ParsedApiKey:
    """A key that passed the offline format and checksum checks."""

    prefix: str
    plaintext: str = field(repr=False)


# Every two-character base62 string, so a 32-bit checksum encodes with two divmods.
_PAIRS = tuple(first + second for first in ALPHABET for second in ALPHABET)
_PAIR_SPACE = len(_PAIRS)
_PAIR_SPACE_SQUARED = _PAIR_SPACE * _PAIR_SPACE


def _base62_checksum(number: int) -> str:
    """Six base62 characters of a 32-bit number (62**6 > 2**32), on the request path."""
    return (
        _PAIRS[number // _PAIR_SPACE_SQUARED]
        + _PAIRS[number // _PAIR_SPACE % _PAIR_SPACE]
        + _PAIRS[number % _PAIR_SPACE]
    )


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def checksum(body: str) -> str:
    """The 6-character base62 CRC32 of ``body`` (the key without its checksum)."""
    return _base62_checksum(zlib.crc32(body.encode()))


def generate_api_key() -> ParsedApiKey:
    """A fresh key with a random public identifier and 130 bits of secret."""
    prefix = TYPE_PREFIX + _random_base62(ID_LENGTH)
    body = f"{prefix}_{_random_base62(SECRET_LENGTH)}"
    return ParsedApiKey(prefix=prefix, plaintext=body + checksum(body))


PREFIX_LENGTH = len(TYPE_PREFIX) + ID_LENGTH
"""The length of a key's public prefix (``game_`` and the 8-character identifier)."""


def validated_prefix(text: str) -> str:
    """The public prefix of a well-formed key; ``MalformedApiKey`` otherwise. No I/O.

    This is the request path's check, so it builds nothing it does not return: the length test
    comes first (a 100 KB header costs a ``len``), then one regex and one CRC32.
    """
    if len(text) != KEY_LENGTH:
        raise MalformedApiKey("wrong length")
    if _KEY_PATTERN.fullmatch(text) is None:
        raise MalformedApiKey("wrong shape")
    # A plain comparison: the checksum is public (anyone can compute it), not a secret.
    if text[-CHECKSUM_LENGTH:] != _base62_checksum(zlib.crc32(text.encode()[:-CHECKSUM_LENGTH])):
        raise MalformedApiKey("bad checksum")
    return text[:PREFIX_LENGTH]


def parse_api_key(text: str) -> ParsedApiKey:
    """Check shape and checksum without any I/O; raise ``MalformedApiKey`` otherwise."""
    return ParsedApiKey(prefix=validated_prefix(text), plaintext=text)


def is_valid_prefix(text: str) -> bool:
    """Whether ``text`` has the shape of a public key prefix (``game_`` + 8 base62 chars)."""
    return _PREFIX_PATTERN.fullmatch(text) is not None


def digest(plaintext: str) -> str:
    """The sha256 hex digest: the stored form of a key and its cache key.

    A fast hash is right here: with 130 random bits there is nothing for a slow hash to protect.
    CPython's own sha256 (``app.domain.digests``), the same digest as hashlib's.
    """
    return sha256(plaintext.encode("utf-8")).hexdigest()


def checked_prefix(text: str) -> str:
    """``text`` when it has the shape of a prefix; ``UnknownKeyPrefix`` otherwise.

    A malformed prefix names no key: the answer is "no such key" without asking the database.
    """
    if not is_valid_prefix(text):
        raise UnknownKeyPrefix(text)
    return text
