"""The sha256 every key digest is computed with: CPython's own, not OpenSSL's.

A key's digest is its stored form and its cache key, and a process-local hit hashes the
presented key on every request. ``hashlib.sha256`` is OpenSSL's, reached through its EVP layer:
each call allocates a digest context, finds the algorithm's implementation through the provider
and frees the context again. For a 40-character key that set-up is most of the work, and inside
a served request, where none of that code is still in the CPU's caches, it was the largest single
cost of the key check, several times what CPython's own sha256 took in the same requests
(``bench/PROFILE.md`` has the figures). CPython's built-in module (``_sha2`` from 3.12, ``_sha256``
before) computes the same digest with no set-up beyond the object itself. hashlib uses that same
module when OpenSSL lacks sha256; here it is chosen first, and hashlib's is the fallback for an
interpreter built without it.

Both give the same digest, so stored keys, Redis keys and signed records are unaffected by which
one a process uses.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from typing import Protocol, cast


class Sha256Hash(Protocol):
    """What a digest is read from (the part of a hashlib object used here)."""

    def hexdigest(self) -> str: ...


Sha256 = Callable[[bytes], Sha256Hash]

BUILTIN_SHA256_MODULES = ("_sha2", "_sha256")
"""Where CPython keeps its own sha256: ``_sha2`` from 3.12, ``_sha256`` in 3.11."""


def builtin_sha256(modules: tuple[str, ...] = BUILTIN_SHA256_MODULES) -> Sha256:
    """CPython's own sha256 constructor, or ``hashlib.sha256`` when none of ``modules`` has one."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        constructor = getattr(module, "sha256", None)
        if callable(constructor):
            return cast(Sha256, constructor)
    return cast(Sha256, hashlib.sha256)


sha256: Sha256 = builtin_sha256()
"""The constructor for every key digest (see the module docstring for why this one)."""
