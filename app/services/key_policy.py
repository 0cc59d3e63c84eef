"""Who may create which key: a key can only hand on what it holds.

A key that creates keys (an ``admin`` key over HTTP) may grant only scopes it holds itself, and
the new key may not outlive it: a key with an expiry cannot create a key without one, nor one
that expires later. Otherwise a temporary or narrow credential mints a permanent or wider one,
and issuing it contained nothing.

``admin`` does not imply ``read`` or ``write``: the subset rule is applied strictly, so what a
key can grant is exactly what its listing shows. That is why the first admin key (``serve
--bootstrap-admin``) carries every scope. The operator command line (``game-api keys create``)
has no issuing key: whoever can run it can already write to the database, so it is trusted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from app.domain.errors import KeyPolicyViolation


def check_issuance(
    issuer_scopes: Iterable[str],
    issuer_expires_at: datetime | None,
    scopes: Iterable[str],
    expires_at: datetime | None,
) -> None:
    """Raise ``KeyPolicyViolation`` unless a key with the issuer's scopes and expiry may create
    a key with ``scopes`` and ``expires_at``.

    A pure function of the four values, so the same rule can guard every path that issues a
    key (create, and any future path that copies a key's scopes and expiry).
    """
    held = frozenset(issuer_scopes)
    missing = sorted(frozenset(scopes) - held)
    if missing:
        raise KeyPolicyViolation(
            f"a key can only grant scopes it holds: the calling key lacks {missing[0]!r}",
            field="scopes",
        )
    if issuer_expires_at is None:
        return
    if expires_at is None:
        raise KeyPolicyViolation(
            "the calling key expires, so the new key must expire too, no later than it: "
            "give expires_in",
            field="expires_in",
        )
    if expires_at > issuer_expires_at:
        raise KeyPolicyViolation(
            "the new key would outlive the calling key: expires_in must end no later than "
            "the calling key's expiry",
            field="expires_in",
        )
