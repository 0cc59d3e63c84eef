"""The outcome of an invalidation, shared by every cache backend and the key service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

InvalidationScope = Literal["process", "shared", "all-workers"]


@dataclass(frozen=True, slots=True)
class InvalidationReport:
    """How far an invalidation reached.

    ``confirmed`` means every copy the backend is responsible for was replaced: the local dict
    for ``memory``, the shared keyspace for ``redis``, and for ``tiered`` also the L1 of every
    live subscriber (``acknowledged`` out of ``expected``).
    """

    confirmed: bool
    scope: InvalidationScope
    detail: str = ""
    acknowledged: int | None = None
    expected: int | None = None
