"""The one bounded map: what its hot-path lookups mark as recently used, and what they leave."""

from __future__ import annotations

from app.services.bounded_ttl_map import NEVER, BoundedTtlMap


def test_get_marks_an_entry_recently_used_so_the_next_put_evicts_another() -> None:
    entries: BoundedTtlMap[str, int] = BoundedTtlMap(2, expiring=False)
    entries.put("a", 1)
    entries.put("b", 2)

    assert entries.get("a") == 1
    entries.put("c", 3)

    assert list(entries) == ["a", "c"]


def test_peek_item_leaves_the_order_alone_so_the_oldest_put_goes_first() -> None:
    entries: BoundedTtlMap[str, int] = BoundedTtlMap(2, expiring=False)
    entries.put("a", 1)
    entries.put("b", 2)

    assert entries.peek_item("a") == (NEVER, 1)
    entries.put("c", 3)

    assert list(entries) == ["b", "c"]
    assert entries.peek_item("a") is None


def test_peek_item_hands_back_the_expiry_without_judging_or_removing_it() -> None:
    entries: BoundedTtlMap[str, str] = BoundedTtlMap(4)
    entries.put_until("gone", "value", expires_at=0.0)

    assert entries.peek_item("gone") == (0.0, "value")
    assert len(entries) == 1
    assert entries.get("gone") is None
    assert len(entries) == 0


def test_touch_marks_an_entry_recently_used_as_get_does() -> None:
    entries: BoundedTtlMap[str, int] = BoundedTtlMap(2, expiring=False)
    entries.put("a", 1)
    entries.put("b", 2)

    entries.touch("a")
    entries.put("c", 3)

    assert list(entries) == ["a", "c"]
