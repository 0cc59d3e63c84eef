"""The command line's rough edges, each as an operator meets it (a subprocess)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from importlib.metadata import version
from pathlib import Path

from alembic.script import ScriptDirectory

from app.db.migrate import alembic_config
from tests.cli.test_cli import Cli, assert_one_line_error, cli  # noqa: F401
from tests.support.live_server import console_script
from tests.support.redis_server import free_port

HEAD = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://")).get_current_head()


def _run_in(
    directory: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``game-api ARGS`` in ``directory`` with no database setting of the developer's."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GAME_API_CONFIG")}
    return subprocess.run(
        [console_script(), *args],
        cwd=directory,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_output_cut_short_by_its_reader_ends_quietly(cli: Cli) -> None:  # noqa: F811
    for number in range(3):
        cli.ok("keys", "create", "--name", f"bot-{number}")
    for args in (("keys", "list"), ("keys", "list", "--json")):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before a byte is written: every write fails
        try:
            result = subprocess.run(
                [console_script(), *args],
                env=cli.env,
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            os.close(write_end)

        assert result.returncode == 141, result.stderr
        assert result.stderr == ""


def test_db_upgrade_says_what_it_applied_and_where(tmp_path: Path) -> None:
    fresh = Cli(tmp_path)

    first = fresh.ok("db", "upgrade")
    second = fresh.ok("db", "upgrade")

    assert f"database: {fresh.database_url}" in first
    assert re.search(rf"applied \d+ migrations? \(now at {HEAD}\)", first), first
    assert "up to date" not in first
    assert f"already up to date ({HEAD})" in second
    assert "applied" not in second


def test_a_url_without_the_async_driver_names_the_fix(tmp_path: Path) -> None:
    for url, fix in [
        ("postgresql://ops:hunter2@127.0.0.1:5432/game", "postgresql+asyncpg://"),
        ("postgres://ops:hunter2@127.0.0.1/game", "postgresql+asyncpg://"),
        ("sqlite:///./game.db", "sqlite+aiosqlite://"),
    ]:
        for args in (("db", "upgrade"), ("keys", "list")):
            result = _run_in(tmp_path, *args, env={"DATABASE_URL": url})
            assert_one_line_error(result, "DATABASE_URL", f"use {fix}")
            assert "hunter2" not in result.stderr
            assert "ModuleNotFoundError" not in result.stderr


def test_an_unreachable_database_is_named_with_its_password_masked(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://ops:hunter2@127.0.0.1:{free_port()}/game"
    for args in (("db", "upgrade"), ("keys", "list")):
        result = _run_in(tmp_path, *args, env={"DATABASE_URL": url})

        assert_one_line_error(result, "postgresql+asyncpg://ops:***@127.0.0.1")
        assert "hunter2" not in result.stderr + result.stdout


def test_keys_commands_refuse_a_missing_sqlite_file_instead_of_creating_it(tmp_path: Path) -> None:
    result = _run_in(tmp_path, "keys", "list")

    assert_one_line_error(
        result, f"no database at {tmp_path.resolve() / 'game-api.db'}", "game-api db upgrade"
    )
    assert not (tmp_path / "game-api.db").exists()


def test_db_upgrade_says_it_creates_a_new_sqlite_file(tmp_path: Path) -> None:
    result = _run_in(tmp_path, "db", "upgrade")

    assert result.returncode == 0, result.stderr
    assert f"creating a new SQLite database at {tmp_path.resolve() / 'game-api.db'}" in (
        result.stdout
    )
    assert "database: sqlite+aiosqlite:///./game-api.db" in result.stdout


def test_a_misspelt_setting_in_a_config_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "typo.env"
    config.write_text("# cache\nAPIKEY_CACHE_BACKEND=memory\nAPIKEY_CACHE_TTL=5\n")

    result = _run_in(tmp_path, "keys", "list", "--config", str(config))

    assert_one_line_error(
        result, f"{config}:3", "unknown setting APIKEY_CACHE_TTL", "APIKEY_CACHE_TTL_SECONDS"
    )


def test_unrelated_environment_variables_are_still_allowed(cli: Cli) -> None:  # noqa: F811
    result = cli.run("keys", "list", env={"APIKEY_CACHE_TTL": "5", "SOMETHING_ELSE": "x"})

    assert result.returncode == 0, result.stderr


def test_serve_refuses_an_impossible_port_before_touching_the_database(tmp_path: Path) -> None:
    for port in ("99999", "0", "65536"):
        result = _run_in(tmp_path, "serve", "--port", port)

        assert result.returncode == 2
        assert_one_line_error(result, "--port")
    assert not (tmp_path / "game-api.db").exists()


def test_serve_on_a_busy_port_says_so_before_migrating(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        result = _run_in(tmp_path, "serve", "--host", "127.0.0.1", "--port", str(port))

    assert_one_line_error(result, f"port {port} on 127.0.0.1 is already in use")
    assert "Can't connect" not in result.stderr
    assert not (tmp_path / "game-api.db").exists()


def test_version_is_the_installed_package_s(tmp_path: Path) -> None:
    result = _run_in(tmp_path, "--version")

    assert result.returncode == 0
    assert result.stdout.strip() == f"game-api {version('game-api')}"


def test_the_key_table_stays_aligned_with_and_without_an_expiry(cli: Cli) -> None:  # noqa: F811
    cli.ok("keys", "create", "--name", "forever", "--scope", "read")
    cli.ok("keys", "create", "--name", "short lived", "--scope", "admin", "--scope", "write",
           "--expires-in", "3600")  # fmt: skip
    revoked = cli.json("keys", "create", "--name", "gone")
    cli.ok("keys", "revoke", revoked["prefix"])

    lines = cli.ok("keys", "list").splitlines()

    header, rows = lines[0], lines[1:]
    assert len(rows) == 3
    starts = [header.index(title) for title in ("STATUS", "SCOPES", "EXPIRES", "NAME")]
    for row in rows:
        for start in starts:
            assert row[start - 2 : start] == "  " and row[start] != " ", (row, start)
    assert any(re.search(r"\d{4}-\d\d-\d\dT", row) for row in rows)
    assert any("never" in row for row in rows)
