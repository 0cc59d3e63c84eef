"""``game-api keys list`` a page at a time, and the first admin key of ``--bootstrap-admin``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.cli import bootstrap_admin
from app.core.container import build_container
from app.core.resources import close_container_resources
from app.services.apikey_service import ApiKeyService
from configs import Settings
from tests.cli.test_cli import Cli, assert_one_line_error, cli  # noqa: F401
from tests.support.databases import migrated_sqlite_url


def create_keys(cli: Cli, count: int, name: str = "bot") -> list[str]:  # noqa: F811
    return [
        cli.json("keys", "create", "--name", f"{name}-{i}", "--scope", "read")["prefix"]
        for i in range(count)
    ]


def test_keys_list_json_pages_with_the_http_body(cli: Cli) -> None:  # noqa: F811
    prefixes = create_keys(cli, 3)

    first = cli.json("keys", "list", "--limit", "2")
    second = cli.json("keys", "list", "--limit", "2", "--cursor", first["next_cursor"])

    assert set(first) == {"keys", "next_cursor"}
    assert [key["prefix"] for key in first["keys"] + second["keys"]] == prefixes
    assert second["next_cursor"] is None


def test_keys_list_text_ends_with_the_next_cursor_when_there_is_more(
    cli: Cli,  # noqa: F811
) -> None:
    prefixes = create_keys(cli, 3)

    text = cli.ok("keys", "list", "--limit", "2").splitlines()
    cursor = text[-1].removeprefix("next: ")
    rest = cli.ok("keys", "list", "--limit", "2", "--cursor", cursor).splitlines()

    assert text[-1].startswith("next: ")
    assert [line.split()[0] for line in text[1:-1]] == prefixes[:2]
    assert [line.split()[0] for line in rest[1:]] == prefixes[2:]
    assert not rest[-1].startswith("next:")


def test_keys_list_active_and_name_prefix(cli: Cli) -> None:  # noqa: F811
    bots = create_keys(cli, 2, name="bot")
    create_keys(cli, 1, name="ops")
    cli.ok("keys", "revoke", bots[0])

    active = cli.json("keys", "list", "--active", "--name-prefix", "bot")

    assert [key["prefix"] for key in active["keys"]] == [bots[1]]


def test_keys_list_refuses_a_bad_cursor_and_limit_in_one_line(cli: Cli) -> None:  # noqa: F811
    assert_one_line_error(cli.run("keys", "list", "--cursor", "garbage"), "cursor is malformed")
    assert_one_line_error(cli.run("keys", "list", "--limit", "1001"), "limit")


async def test_bootstrap_admin_creates_one_key_with_every_scope(tmp_path: Path) -> None:
    url = await asyncio.to_thread(migrated_sqlite_url, tmp_path)
    container = build_container(Settings(DATABASE_URL=url))
    try:
        service: ApiKeyService = container.apikey_service()
        await service.create("reader", ["read"])

        created = await bootstrap_admin(service)
        again = await bootstrap_admin(service)

        assert created is not None
        assert created.record.scopes == ("admin", "read", "write")
        assert created.record.expires_at is None
        assert again is None

        await service.revoke(created.record.prefix)
        replacement = await bootstrap_admin(service)
        assert replacement is not None
        assert replacement.record.prefix != created.record.prefix
    finally:
        await close_container_resources(container)
