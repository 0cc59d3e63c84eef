"""At most one failed cache call per authentication; after it, the request skips the cache.

A miss makes up to three cache calls (read, fill, re-read after a refused fill). Against a hung
Redis each would wait the full timeout, so before the breaker opened one request could wait three
timeouts. The promise is one timeout plus the database lookup. So ``ApiKeyService.authenticate``
opens a budget for the request, and the circuit breaker spends it on the first failure and
answers every later degradable call of that request with its fallback.

The budget lives in a ``ContextVar`` because the single-flight load runs as its own task, which
copies the context of the request that started it and so shares that request's budget.
"""

from __future__ import annotations

from contextvars import ContextVar, Token


class CacheBudget:
    """Whether the current request has already paid for one failed cache call."""

    __slots__ = ("spent",)

    def __init__(self) -> None:
        self.spent = False


_current: ContextVar[CacheBudget | None] = ContextVar("apikey_cache_budget", default=None)


def open_budget() -> Token[CacheBudget | None]:
    """Start a request's budget; pass the token to ``close_budget`` when the request ends."""
    return _current.set(CacheBudget())


def close_budget(token: Token[CacheBudget | None]) -> None:
    _current.reset(token)


def budget_spent() -> bool:
    """True once a cache call failed in this request (never outside a request)."""
    budget = _current.get()
    return budget is not None and budget.spent


def spend_budget() -> None:
    budget = _current.get()
    if budget is not None:
        budget.spent = True
