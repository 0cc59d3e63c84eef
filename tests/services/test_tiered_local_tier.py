"""The L1 on its own: fill tickets, trust, bounds; and the channel's message format."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from app.services.invalidation_listener import Invalidation, decode_invalidation
from app.services.local_tier import LocalTier

KEY = "f" * 64
VALUE = SimpleNamespace(apiKey="game_AbCd1234", active=True)


@pytest.fixture
def tier() -> LocalTier:
    tier = LocalTier(max_entries=10, max_ttl_seconds=60)
    tier.trusted = True
    return tier


def test_a_fill_nothing_overtook_is_stored(tier: LocalTier) -> None:
    ticket = tier.begin_fill(KEY)
    assert tier.end_fill(KEY, ticket, VALUE, 30) is True
    cached = tier.lookup(KEY)
    assert cached is not None and vars(cached) == vars(VALUE)


@pytest.mark.parametrize("overtaken_by", ["evict", "flush"])
def test_a_fill_overtaken_by_an_invalidation_is_dropped(tier: LocalTier, overtaken_by: str) -> None:
    ticket = tier.begin_fill(KEY)
    if overtaken_by == "evict":
        tier.evict(KEY)
    else:
        tier.flush()
    assert tier.end_fill(KEY, ticket, VALUE, 30) is False
    assert tier.lookup(KEY) is None


def test_only_the_fills_that_started_before_the_eviction_are_dropped(tier: LocalTier) -> None:
    before = tier.begin_fill(KEY)
    tier.evict(KEY)
    after = tier.begin_fill(KEY)

    assert tier.end_fill(KEY, after, VALUE, 30) is True
    assert (
        tier.end_fill(KEY, before, SimpleNamespace(apiKey="game_AbCd1234", active=False), 30)
        is False
    )
    cached = tier.lookup(KEY)
    assert cached is not None and cached.active is True


def test_an_eviction_of_another_key_does_not_drop_the_fill(tier: LocalTier) -> None:
    ticket = tier.begin_fill(KEY)
    tier.evict("0" * 64)
    assert tier.end_fill(KEY, ticket, VALUE, 30) is True


def test_nothing_is_stored_while_untrusted(tier: LocalTier) -> None:
    ticket = tier.begin_fill(KEY)
    tier.trusted = False
    assert tier.end_fill(KEY, ticket, VALUE, 30) is False
    assert len(tier) == 0


def test_the_entry_ttl_is_the_smaller_of_the_shared_ttl_and_the_l1_cap() -> None:
    tier = LocalTier(max_entries=10, max_ttl_seconds=0.000_001)
    tier.trusted = True
    assert tier.end_fill(KEY, tier.begin_fill(KEY), VALUE, 60) is True
    assert tier.lookup(KEY) is None, "capped by the L1 TTL"

    tier = LocalTier(max_entries=10, max_ttl_seconds=60)
    tier.trusted = True
    assert tier.end_fill(KEY, tier.begin_fill(KEY), VALUE, 0.000_001) is True
    assert tier.lookup(KEY) is None, "capped by the shared TTL"
    assert tier.end_fill(KEY, tier.begin_fill(KEY), VALUE, 0) is False


def test_least_recently_used_entries_go_first() -> None:
    small = LocalTier(max_entries=2, max_ttl_seconds=60)
    small.trusted = True
    for key in ("1", "2"):
        small.end_fill(key, small.begin_fill(key), VALUE, 30)
    assert small.lookup("1") is not None  # "1" is now the most recently used
    small.end_fill("3", small.begin_fill("3"), VALUE, 30)
    assert small.lookup("2") is None
    assert small.lookup("1") is not None and small.lookup("3") is not None


def test_a_returned_value_is_a_copy(tier: LocalTier) -> None:
    tier.end_fill(KEY, tier.begin_fill(KEY), VALUE, 30)
    first = tier.lookup(KEY)
    assert first is not None
    first.active = False
    second = tier.lookup(KEY)
    assert second is not None and second.active is True


def test_an_invalidation_message_round_trips() -> None:
    message = Invalidation(message_id="m1", cache_key=KEY, reply_to="p:invalidate:ack:x")
    assert decode_invalidation(message.encode()) == message
    flush = Invalidation(message_id="m2", cache_key=None, reply_to=None)
    assert decode_invalidation(flush.encode()) == flush


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"id":"m","key":"k"}',
        b'{"id":1,"key":"k","reply":null}',
        b'{"id":"m","key":7,"reply":null}',
        b'{"id":"m","key":"k","reply":null,"extra":1}',
        b"x" * 5_000,
        None,
    ],
)
def test_foreign_messages_are_not_invalidations(raw: object) -> None:
    assert decode_invalidation(raw) is None


def test_peek_item_shows_the_stored_item_only_while_trusted(tier: LocalTier) -> None:
    """The request path reads the L1's item itself: while the L1 may not be trusted it must
    find nothing there, although the entry is still stored."""
    before = time.monotonic()
    assert tier.end_fill(KEY, tier.begin_fill(KEY), VALUE, 30) is True

    stored = tier.peek_item(KEY)
    assert stored is not None
    expires_at, value = stored
    assert vars(value) == vars(VALUE)
    assert before + 30 <= expires_at <= time.monotonic() + 30, "the entry's own expiry"
    tier.trusted = False
    assert tier.peek_item(KEY) is None, "an untrusted L1 shows nothing"
    assert len(tier) == 1
    tier.trusted = True
    assert tier.peek_item(KEY) == stored


def test_touch_keeps_a_used_l1_entry_over_an_older_unused_one() -> None:
    tier = LocalTier(max_entries=2, max_ttl_seconds=30)
    tier.trusted = True
    first, second, third = "a" * 64, "b" * 64, "c" * 64
    for key in (first, second):
        assert tier.end_fill(key, tier.begin_fill(key), VALUE, 30) is True

    tier.touch(first)
    assert tier.end_fill(third, tier.begin_fill(third), VALUE, 30) is True

    assert tier.peek_item(first) is not None
    assert tier.peek_item(second) is None, "the least recently used entry was evicted"
