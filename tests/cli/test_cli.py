"""The ``game-api`` console script, run as an operator runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from app.domain.keys import digest, parse_api_key
from tests.support.live_server import LiveServer, console_script

SETTING_NAMES = ("GAME_API_CONFIG", "APIKEY_CACHE_BACKEND", "REDIS_URL", "DATABASE_URL")


class Cli:
    """``game-api`` with a database of this test's own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.database_url = f"sqlite+aiosqlite:///{directory / 'cli.db'}"
        self.env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
        self.env["DATABASE_URL"] = self.database_url

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [console_script(), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("game-api")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    return cli


def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    assert "applied" in cli.ok("db", "upgrade")
    assert "already up to date" in cli.ok("db", "upgrade")


def test_keys_create_json_has_the_key_and_its_prefix(cli: Cli) -> None:
    created = cli.json("keys", "create", "--name", "ops", "--scope", "admin", "--scope", "read")

    assert parse_api_key(created["key"]).prefix == created["prefix"]
    assert created["name"] == "ops"
    assert created["scopes"] == ["admin", "read"]
    assert created["expires_at"] is None


def test_keys_create_text_shows_the_key_once_and_honours_expiry(cli: Cli) -> None:
    output = cli.ok("keys", "create", "--name", "temp", "--expires-in", "3600")

    match = re.search(r"key:\s+(game_\S+)", output)
    assert match is not None
    assert "shown this once" in output
    listing = cli.json("keys", "list")["keys"]
    assert listing[0]["expires_at"] is not None
    assert match.group(1) not in json.dumps(listing)


def test_keys_list_shows_no_secret(cli: Cli) -> None:
    created = cli.json("keys", "create", "--name", "bot", "--scope", "read")

    listing = cli.json("keys", "list")["keys"]
    table = cli.ok("keys", "list")

    assert [entry["prefix"] for entry in listing] == [created["prefix"]]
    assert "key" not in listing[0] and "digest" not in listing[0]
    for text in (json.dumps(listing), table):
        assert created["key"] not in text
        assert digest(created["key"]) not in text
    assert created["prefix"] in table and "active" in table


def test_keys_revoke_marks_the_key_revoked(cli: Cli) -> None:
    created = cli.json("keys", "create", "--name", "bot")

    output = cli.ok("keys", "revoke", created["prefix"])

    assert f"revoked {created['prefix']}" in output
    assert cli.json("keys", "list")["keys"][0]["active"] is False


def test_keys_rotate_issues_a_new_key_and_schedules_the_old_one(cli: Cli) -> None:
    old = cli.json("keys", "create", "--name", "server", "--scope", "write")

    rotated = cli.json("keys", "rotate", old["prefix"], "--grace", "120")

    assert rotated["prefix"] != old["prefix"]
    assert parse_api_key(rotated["key"]).prefix == rotated["prefix"]
    assert rotated["scopes"] == ["write"]
    assert rotated["old_key"]["prefix"] == old["prefix"]
    assert rotated["old_key"]["expires_at"] is not None
    assert rotated["old_key"]["active"] is True


def test_rotating_a_revoked_key_fails_in_one_line(cli: Cli) -> None:
    created = cli.json("keys", "create", "--name", "bot")
    cli.ok("keys", "revoke", created["prefix"])

    assert_one_line_error(cli.run("keys", "rotate", created["prefix"]), "revoked or expired")


@pytest.mark.parametrize("prefix", ["game_ZZZZZZZZ", "not-a-prefix"])
@pytest.mark.parametrize("command", ["revoke", "rotate"])
def test_unknown_prefix_fails_in_one_line(cli: Cli, command: str, prefix: str) -> None:
    assert_one_line_error(cli.run("keys", command, prefix), "no key has the prefix", prefix)


def test_bad_scope_fails_in_one_line(cli: Cli) -> None:
    result = cli.run("keys", "create", "--name", "x", "--scope", "superuser")
    assert_one_line_error(result, "unknown scope 'superuser'")


def test_missing_config_file_fails_in_one_line(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    for args in (("keys", "list"), ("db", "upgrade"), ("cache", "clear"), ("serve",)):
        result = cli.run(*args, "--config", str(missing))
        assert_one_line_error(result, "config file not found", str(missing))


def test_invalid_setting_in_a_config_file_fails_in_one_line(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "bad.env"
    config.write_text("APIKEY_CACHE_BACKEND=carrier-pigeon\n")

    assert_one_line_error(cli.run("keys", "list", "--config", str(config)), "APIKEY_CACHE_BACKEND")


def test_usage_errors_are_one_line(cli: Cli) -> None:
    assert_one_line_error(cli.run("keys", "create"), "--name")
    assert_one_line_error(cli.run("keys", "create", "--name", "x", "--expires-in", "0"))
    assert_one_line_error(cli.run("launch-missiles"))


def test_an_unmigrated_database_says_what_to_do(tmp_path: Path) -> None:
    assert_one_line_error(Cli(tmp_path).run("keys", "list"), "game-api db upgrade")


def test_config_file_chooses_the_database_and_env_vars_override_it(
    cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "other").mkdir()
    other = Cli(tmp_path / "other")
    other.ok("db", "upgrade")
    config = tmp_path / "other.env"
    config.write_text(f"DATABASE_URL={other.database_url}\n")
    env_without_database = {k: v for k, v in cli.env.items() if k != "DATABASE_URL"}

    def list_with(env: dict[str, str]) -> list[dict[str, Any]]:
        result = subprocess.run(
            [console_script(), "keys", "list", "--json", "--config", str(config)],
            env=env, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        listed: list[dict[str, Any]] = json.loads(result.stdout)["keys"]
        return listed

    created = other.json("keys", "create", "--name", "in-other")
    assert [k["prefix"] for k in list_with(env_without_database)] == [created["prefix"]]
    assert list_with(cli.env) == []  # DATABASE_URL in the environment wins over the file


def test_cache_clear_with_the_memory_backend_explains_its_reach(cli: Cli) -> None:
    output = cli.ok("cache", "clear")
    assert "memory backend" in output


@pytest.fixture
def redis_config(tmp_path: Path, redis_url: str, key_prefix: str) -> Iterator[Path]:
    config = tmp_path / "redis.env"
    config.write_text(
        "APIKEY_CACHE_BACKEND=redis\n"
        f"REDIS_URL={redis_url}\n"
        f"APIKEY_CACHE_REDIS_KEY_PREFIX={key_prefix}\n"
    )
    yield config


async def test_cache_clear_with_redis_removes_only_our_prefix(
    cli: Cli, redis_config: Path, real_redis: Redis, key_prefix: str
) -> None:
    await real_redis.set(key_prefix + "a" * 64, b'{"apiKey":"game_AAAAAAAA","active":true}')
    neighbour = key_prefix.rstrip(":") + "-neighbour:" + "b" * 64
    await real_redis.set(neighbour, b"keep me")
    try:
        output = cli.ok("cache", "clear", "--config", str(redis_config))

        assert key_prefix in output
        assert await real_redis.get(key_prefix + "a" * 64) is None
        assert await real_redis.get(neighbour) == b"keep me"
    finally:
        await real_redis.delete(neighbour)


async def test_revoke_through_the_cli_replaces_the_shared_cache_entry(
    cli: Cli, redis_config: Path, real_redis: Redis, key_prefix: str
) -> None:
    created = cli.json("keys", "create", "--name", "bot", "--config", str(redis_config))
    cache_key = key_prefix + digest(created["key"])
    await real_redis.set(
        cache_key, b'{"apiKey":"' + created["prefix"].encode() + b'","active":true}'
    )

    revoked = cli.json("keys", "revoke", created["prefix"], "--config", str(redis_config))

    assert revoked["cache_invalidation"]["confirmed"] is True
    assert revoked["cache_invalidation"]["scope"] == "shared"
    assert json.loads(await real_redis.get(cache_key) or b"{}")["active"] is False


@pytest.mark.slow
def test_serve_bootstrap_admin_creates_one_admin_key_and_shows_it_once() -> None:
    server = LiveServer({}, workers=1, serve_args=["--bootstrap-admin"])
    try:
        server.start()
        match = re.search(r"key:\s+(game_\S+)", server.log_text())
        assert match is not None, server.log_text()
        admin_key = match.group(1)
        assert server.get("/v1/keys", api_key=admin_key).status_code == 200
        server.stop()

        server.start()
        assert "an active admin key exists already" in server.log_text()
        assert server.get("/v1/keys", api_key=admin_key).status_code == 200
        listing = server.get("/v1/keys", api_key=admin_key).json()["keys"]
        assert [entry["name"] for entry in listing] == ["bootstrap-admin"]
    finally:
        server.close()
