"""Every ``--json`` output of the CLI has the HTTP API's shape: same fields, same dates."""

from __future__ import annotations

import httpx

from app.core.resources import close_container_resources
from app.main import create_app
from configs import Settings
from tests.cli.test_cli import Cli, cli  # noqa: F401


async def _http_listing(database_url: str, admin_key: str) -> dict[str, object]:
    app = create_app(Settings(DATABASE_URL=database_url))
    container = app.state.container
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as client:
            response = await client.get("/v1/keys", headers={"X-API-Key": admin_key})
            assert response.status_code == 200
            body: dict[str, object] = response.json()
            return body
    finally:
        await close_container_resources(container)
        container.unwire()


async def test_keys_list_json_is_the_http_listing(cli: Cli) -> None:  # noqa: F811
    admin = cli.json("keys", "create", "--name", "ops", "--scope", "admin")
    cli.json("keys", "create", "--name", "bot", "--scope", "read", "--expires-in", "3600")
    revoked = cli.json("keys", "create", "--name", "old")
    cli.ok("keys", "revoke", revoked["prefix"])

    from_cli = cli.json("keys", "list")
    from_http = await _http_listing(cli.database_url, admin["key"])

    assert from_cli == from_http
    assert all(entry["created_at"].endswith("Z") for entry in from_cli["keys"]), (
        "dates are UTC with a Z, as over HTTP"
    )


async def test_created_revoked_and_rotated_json_have_the_http_fields(cli: Cli) -> None:  # noqa: F811
    created = cli.json("keys", "create", "--name", "bot", "--scope", "read")
    rotated = cli.json("keys", "rotate", created["prefix"], "--grace", "60")
    revoked = cli.json("keys", "revoke", rotated["prefix"])

    assert set(created) == {"key", "prefix", "name", "scopes", "created_at", "expires_at"}
    assert set(rotated) == set(created) | {"old_key", "cache_invalidation", "finality"}
    assert set(revoked) == {
        "prefix", "name", "scopes", "created_at", "expires_at", "revoked_at", "active",
        "cache_invalidation", "finality",
    }  # fmt: skip
    assert revoked["revoked_at"].endswith("Z")
