"""Every failure the service answers on purpose, under one base.

A ``GameApiError`` carries what each front end needs and nothing it must not show: the HTTP
status, a public message that is safe to send to any client (no key material, no reason a
prober could learn from), and an operator message for the command line, which may name the
prefix or the setting at fault. The HTTP layer has one handler for the base and the CLI one
``except``; adding a failure means adding a class here, not a handler there.
"""

from __future__ import annotations

from typing import ClassVar


class GameApiError(Exception):
    """Base of the service's deliberate failures; see the module docstring."""

    status_code: ClassVar[int] = 500
    public_message: ClassVar[str] = "internal server error"

    def public_detail(self) -> str:
        """The ``detail`` of the HTTP answer: safe for any client."""
        return self.public_message

    def response_headers(self) -> dict[str, str] | None:
        """Extra HTTP response headers (``WWW-Authenticate`` for a 401)."""
        return None

    def operator_message(self) -> str:
        """The one line the command line prints."""
        return str(self) or self.public_message


class InvalidApiKey(GameApiError):
    """The key must be refused. ``reason`` is for logs and metrics, never the client.

    One answer for missing, malformed, unknown, revoked and expired: telling them apart
    would help someone probing for keys.
    """

    status_code = 401
    public_message = "invalid or missing API key"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def response_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "APIKey"}


class AmbiguousApiKeyHeader(GameApiError):
    """The key header was sent more than once: which one to trust is not ours to guess."""

    status_code = 400

    def __init__(self, header_name: str) -> None:
        super().__init__(header_name)
        self.header_name = header_name

    def public_detail(self) -> str:
        return f"send the {self.header_name} header exactly once"


class MissingScope(GameApiError):
    """A valid key without the scope a route needs."""

    status_code = 403

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope

    def public_detail(self) -> str:
        return f"this key lacks the {self.scope!r} scope"


class UnknownKeyPrefix(GameApiError):
    """No key has this prefix (a malformed prefix included)."""

    status_code = 404
    public_message = "no key has this prefix"

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.prefix = prefix

    def operator_message(self) -> str:
        return f"no key has the prefix {self.prefix!r}"


class KeyNotActive(GameApiError):
    """The key is revoked, expired or already rotated, so it cannot change any more.

    A rotated key names its successor (a public prefix), so a client that raced another
    rotation learns which key to use.
    """

    status_code = 409
    public_message = "the key is revoked or expired"

    def __init__(self, prefix: str, successor: str | None = None) -> None:
        super().__init__(prefix)
        self.prefix = prefix
        self.successor = successor

    def public_detail(self) -> str:
        if self.successor is not None:
            return f"the key was already rotated: its successor is {self.successor}"
        return self.public_message

    def operator_message(self) -> str:
        if self.successor is not None:
            return f"key {self.prefix} was already rotated: its successor is {self.successor}"
        return f"key {self.prefix} is revoked or expired and cannot be rotated"


class InvalidKeyRequest(GameApiError):
    """A create or rotate request with bad input; the message says which field and why.

    The message is built by the service from its own words, never from the input, so it is
    safe to show. ``field`` names the body field at fault, for the HTTP answer's ``loc``.
    """

    status_code = 422
    location: ClassVar[str] = "body"
    """Where the field at fault travels: the ``loc`` of the HTTP answer starts with it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def public_detail(self) -> str:
        return str(self)


class DuplicateKey(GameApiError):
    """A key with this prefix or digest already exists (the service retries with another)."""

    status_code = 409
    public_message = "a key with this prefix exists already"


class RepositoryUnavailable(GameApiError):
    """The database cannot be reached (or timed out): 503, never 401, never a stack trace."""

    status_code = 503
    public_message = "the key database is unavailable; try again shortly"

    def operator_message(self) -> str:
        return f"{self} (is it reachable, and has `game-api db upgrade` been run?)"


class CacheUnavailable(GameApiError):
    """The shared cache could not carry out an operation that must not be skipped."""

    status_code = 503
    public_message = "the shared key cache is unavailable; try again shortly"

    def operator_message(self) -> str:
        return f"the shared cache is unreachable: {self}"


class RevocationNotFinal(GameApiError):
    """The revocation is committed, but finality could not be proven within the bound.

    The key stays revoked in the database, and every process that applies the event log
    refuses it; what could not be confirmed in time is said in the message.
    """

    status_code = 503
    public_message = "the key is revoked, but the revocation is not yet final everywhere"

    def public_detail(self) -> str:
        return f"{self.public_message}: {self}"


class KeyPolicyViolation(InvalidKeyRequest):
    """A key asked to create a key with more than it holds: a scope it lacks or a longer life.

    Without this rule a short-lived or narrow credential could mint a permanent, wider one, and
    handing out a temporary key would contain nothing. The message names the rule that was
    broken, in the service's own words.
    """


class InvalidListRequest(InvalidKeyRequest):
    """A listing request the service cannot answer: a page size out of range, a cursor it never
    issued (tampered, truncated, or from another listing), or a filter that is too long."""

    location = "query"
