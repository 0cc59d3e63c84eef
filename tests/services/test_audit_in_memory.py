"""The in-memory repository keeps the audit trail as the SQL one does (service level)."""

from __future__ import annotations

import pytest

from app.domain.errors import KeyNotActive
from app.repositories.base import AuditActor
from app.repositories.memory import InMemoryApiKeyRepository
from app.services.apikey_cache_backend import InMemoryApiKeyCacheBackend
from app.services.apikey_service import ApiKeyService, AuthenticatedKey


async def test_actions_are_recorded_by_actor_and_a_refused_one_is_not() -> None:
    repository = InMemoryApiKeyRepository()
    service = ApiKeyService(InMemoryApiKeyCacheBackend(), repository)
    admin = AuthenticatedKey(prefix="game_Admin001", scopes=frozenset({"admin"}), expires_at=None)
    created = await service.create("k", [], issuer=admin, request_id="r1")
    target = created.record.prefix
    rotated = await service.rotate(target, actor=AuditActor("game_Admin001", "r2"))
    await service.revoke(rotated.new_key.record.prefix)
    with pytest.raises(KeyNotActive):
        await service.rotate(target, actor=AuditActor("game_Admin001", "r3"))

    page = await service.list_audit(limit=2)
    assert [(e.actor_prefix, e.action, e.request_id) for e in page.entries] == [
        ("cli", "revoked", None),
        ("game_Admin001", "rotated", "r2"),
    ]
    assert page.entries[0].finality is not None
    assert page.entries[1].detail == rotated.new_key.record.prefix
    assert page.next_cursor is not None
    rest = await service.list_audit(limit=2, cursor=page.next_cursor)
    assert [(e.action, e.request_id) for e in rest.entries] == [("created", "r1")]
    assert rest.next_cursor is None
    assert [e.action for e in (await service.list_audit(target_prefix=target)).entries] == [
        "rotated",
        "created",
    ]
