"""``game-api``: the operator command line (serve, keys, cache, database).

Every command takes ``--config PATH`` and honours the same environment variables as the service.
Failures print one line to stderr and exit non-zero; a traceback is never an answer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import NoReturn, TypeVar

from pydantic import BaseModel, TypeAdapter

from app.api.schemas import CreatedKeyOut, KeyListOut, RevokedKeyOut, RotatedKeyOut
from app.core import log_setup
from app.core.container import Container, build_container
from app.core.log_setup import LogFormat
from app.core.resources import close_container_resources
from app.domain.errors import GameApiError
from app.domain.keys import checked_prefix
from app.domain.scopes import ADMIN
from app.services.apikey_service import ApiKeyService, CreatedKey, utc_now
from app.services.cache_protocol import InvalidationReport
from configs import ConfigError, Settings, load_settings

PROG = "game-api"
BOOTSTRAP_ADMIN_NAME = "bootstrap-admin"
T = TypeVar("T")


class CommandError(GameApiError):
    """A failure the operator can act on; its message is the one line printed."""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other failure of the tool."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# -- running commands against the service ---------------------------------------------------


def _run_with_service(settings: Settings, work: Callable[[ApiKeyService], Awaitable[T]]) -> T:
    async def run() -> T:
        container: Container = build_container(settings)
        try:
            return await work(container.apikey_service())
        finally:
            await close_container_resources(container)

    return asyncio.run(run())


def _print_json(model: BaseModel) -> None:
    """The HTTP API's own response shape, so scripts can switch between the two freely."""
    print(model.model_dump_json())


def _when(value: datetime | None) -> str:
    """A date as the JSON shapes print it (ISO 8601, UTC, ``Z``), or ``never``."""
    return "never" if value is None else TypeAdapter(datetime).dump_python(value, mode="json")


def _print_created(created: CreatedKey, heading: str) -> None:
    record = created.record
    print(heading)
    print(f"  key:     {created.plaintext}")
    print(f"  prefix:  {record.prefix}")
    print(f"  name:    {record.name}")
    print(f"  scopes:  {' '.join(record.scopes) or '-'}")
    print(f"  expires: {_when(record.expires_at)}")


def _warn_unconfirmed(report: InvalidationReport) -> None:
    if not report.confirmed:
        print(
            f"{PROG}: warning: cache invalidation not confirmed: {report.detail}", file=sys.stderr
        )


# -- commands ---------------------------------------------------------------------------------


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> None:
    created = _run_with_service(
        settings, lambda service: service.create(args.name, args.scope, args.expires_in)
    )
    if args.json:
        _print_json(CreatedKeyOut.of(created))
    else:
        _print_created(created, "Created a key. It is shown this once: store it now.")


def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> None:
    records = _run_with_service(settings, lambda service: service.list_keys())
    listing = KeyListOut.of(records, utc_now())
    if args.json:
        _print_json(listing)
        return
    rows = [
        (
            key.prefix,
            "active" if key.active else ("revoked" if key.revoked_at else "expired"),
            " ".join(key.scopes) or "-",
            _when(key.expires_at),
            key.name,
        )
        for key in listing.keys
    ]
    header = ("PREFIX", "STATUS", "SCOPES", "EXPIRES", "NAME")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(4)]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4]
        )


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> None:
    prefix = checked_prefix(args.prefix)
    result = _run_with_service(settings, lambda service: service.revoke(prefix))
    if args.json:
        _print_json(RevokedKeyOut.of_result(result, utc_now()))
    else:
        print(
            f"revoked {prefix} (cache: {result.invalidation.detail or result.invalidation.scope})"
        )
    _warn_unconfirmed(result.invalidation)


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> None:
    prefix = checked_prefix(args.prefix)
    result = _run_with_service(settings, lambda service: service.rotate(prefix, args.grace))
    if args.json:
        _print_json(RotatedKeyOut.of_result(result, utc_now()))
    else:
        _print_created(result.new_key, f"Rotated {prefix}. The new key is shown this once:")
        expiry = result.old_record.expires_at
        print(f"  {prefix} stops working at {_when(expiry)}")
    _warn_unconfirmed(result.invalidation)


def cmd_cache_clear(settings: Settings, _args: argparse.Namespace) -> None:
    _run_with_service(settings, lambda service: service.clear_cache())
    if settings.APIKEY_CACHE_BACKEND == "memory":
        print(
            "memory backend: each server worker keeps its own cache, which this command cannot "
            "reach; entries expire within APIKEY_CACHE_TTL_SECONDS "
            f"({settings.APIKEY_CACHE_TTL_SECONDS}s)"
        )
    else:
        print(f"cleared the shared cache under {settings.APIKEY_CACHE_REDIS_KEY_PREFIX!r}")


def cmd_db_upgrade(settings: Settings, _args: argparse.Namespace) -> None:
    _upgrade(settings)
    print("database schema is up to date")


def _upgrade(settings: Settings) -> None:
    from app.db.migrate import upgrade_database  # Alembic is only needed here

    try:
        upgrade_database(settings.DATABASE_URL.get_secret_value())
    except Exception as exc:
        raise CommandError(f"could not migrate the database ({type(exc).__name__})") from exc


async def bootstrap_admin(service: ApiKeyService) -> CreatedKey | None:
    """A first admin key when no active one exists; ``None`` when there is one already."""
    now = utc_now()
    for record in await service.list_keys():
        if ADMIN in record.scopes and record.is_active(now):
            return None
    return await service.create(BOOTSTRAP_ADMIN_NAME, [ADMIN])


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    from app.server import serve  # gunicorn is only needed here

    _upgrade(settings)
    if args.bootstrap_admin:
        created = _run_with_service(settings, bootstrap_admin)
        if created is None:
            print("an active admin key exists already: none created")
        else:
            _print_created(created, "Created the first admin key. It is shown this once:")
        sys.stdout.flush()
    serve(settings, args.host, args.port, args.workers)


# -- parsing ----------------------------------------------------------------------------------


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(
            f"must be at least 1: {text!r}" if minimum == 1 else f"must not be negative: {text!r}"
        )
    return value


def _positive(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative(text: str) -> int:
    return _whole_number(text, 0)


def configure_logging(level: str, log_format: LogFormat = "console") -> None:
    """Log to stderr at ``level`` in ``log_format``; never a driver's statement parameters."""
    log_setup.configure_logging(level, log_format)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", help="a config file (default: $GAME_API_CONFIG, if set)"
    )
    json_flag = _Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="machine-readable output")

    parser = _Parser(prog=PROG, description="Operate the game-api service.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser(
        "serve", parents=[common], help="apply migrations, then serve with gunicorn"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_positive, default=8000)
    serve.add_argument("--workers", type=_positive, default=1)
    serve.add_argument(
        "--bootstrap-admin",
        action="store_true",
        help="create (and print once) an admin key when no active one exists",
    )
    serve.set_defaults(handler=cmd_serve)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True, parser_class=_Parser
    )
    create = keys.add_parser("create", parents=[common, json_flag], help="issue a new key")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scope", action="append", default=[], help="a scope (repeatable): admin, read, write"
    )
    create.add_argument("--expires-in", type=_positive, metavar="SECONDS")
    create.set_defaults(handler=cmd_keys_create)

    listing = keys.add_parser("list", parents=[common, json_flag], help="list keys (no secrets)")
    listing.set_defaults(handler=cmd_keys_list)

    revoke = keys.add_parser("revoke", parents=[common, json_flag], help="revoke a key")
    revoke.add_argument("prefix")
    revoke.set_defaults(handler=cmd_keys_revoke)

    rotate = keys.add_parser("rotate", parents=[common, json_flag], help="issue a replacement key")
    rotate.add_argument("prefix")
    rotate.add_argument(
        "--grace", type=_non_negative, default=0, metavar="SECONDS",
        help="how long the old key keeps working",
    )  # fmt: skip
    rotate.set_defaults(handler=cmd_keys_rotate)

    cache = commands.add_parser("cache", help="the key cache").add_subparsers(
        dest="cache_command", required=True, parser_class=_Parser
    )
    clear = cache.add_parser("clear", parents=[common], help="drop every cached key entry")
    clear.set_defaults(handler=cmd_cache_clear)

    db = commands.add_parser("db", help="the database").add_subparsers(
        dest="db_command", required=True, parser_class=_Parser
    )
    upgrade = db.add_parser("upgrade", parents=[common], help="apply the migrations")
    upgrade.set_defaults(handler=cmd_db_upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        configure_logging(
            settings.LOG_LEVEL if args.command == "serve" else "ERROR", settings.LOG_FORMAT
        )
        args.handler(settings, args)
    except (GameApiError, ConfigError) as exc:
        message = exc.operator_message() if isinstance(exc, GameApiError) else str(exc)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
