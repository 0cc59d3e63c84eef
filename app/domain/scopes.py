"""The scopes a key can carry. A route names the scope it needs; ``admin`` manages keys."""

from __future__ import annotations

ADMIN = "admin"
READ = "read"
WRITE = "write"
KNOWN_SCOPES: frozenset[str] = frozenset({ADMIN, READ, WRITE})
