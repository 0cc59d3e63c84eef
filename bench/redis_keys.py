"""Small synchronous Redis chores around the end-to-end parts: seed a key, remove a prefix."""

from __future__ import annotations

from collections.abc import Iterable

from redis import Redis

from app.services.redis_cache_backend import escape_glob


def seed(redis_url: str, key: str, value: bytes) -> None:
    with Redis.from_url(redis_url, socket_timeout=5) as client:
        client.set(key, value)


def delete_prefix(redis_url: str, prefix: str) -> int:
    """Remove every key under ``prefix`` (bounded SCAN steps); returns how many went."""
    removed = 0
    with Redis.from_url(redis_url, socket_timeout=30) as client:
        for batch in _batches(client.scan_iter(match=escape_glob(prefix) + "*", count=1_000)):
            removed += int(client.unlink(*batch))
    return removed


def _batches(keys: Iterable[bytes], size: int = 1_000) -> list[list[bytes]]:
    batch: list[bytes] = []
    batches: list[list[bytes]] = []
    for key in keys:
        batch.append(key)
        if len(batch) == size:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches
