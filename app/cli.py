"""``game-api``: the operator command line (serve, keys, cache, database).

Every command takes ``--config PATH`` and honours the same environment variables as the service.
Failures print one line to stderr and exit non-zero; a traceback is never an answer. A failure
names what was tried (the database URL with its password masked, the config file) and what to
do. Output cut short by its reader (``game-api keys list | head -1``) ends quietly with 141, as a
tool killed by SIGPIPE would.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn, TypeVar

from pydantic import BaseModel, TypeAdapter

from app.api.schemas import (
    AuditListOut,
    CreatedKeyOut,
    KeyListOut,
    RevokedKeyOut,
    RotatedKeyOut,
)
from app.core import log_setup
from app.core.container import Container, build_container
from app.core.log_setup import LogFormat
from app.core.resources import close_container_resources
from app.domain.errors import GameApiError, RepositoryUnavailable
from app.domain.keys import checked_prefix
from app.domain.scopes import KNOWN_SCOPES
from app.services.apikey_service import ApiKeyService, CreatedKey, utc_now
from app.services.audit_pages import DEFAULT_AUDIT_PAGE_SIZE
from app.services.cache_protocol import InvalidationReport
from app.services.key_pages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from configs import ConfigError, Settings, load_settings

PROG = "game-api"
BOOTSTRAP_ADMIN_NAME = "bootstrap-admin"
MAX_PORT = 65_535
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process killed by SIGPIPE
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

    try:
        return asyncio.run(run())
    except RepositoryUnavailable as exc:
        raise CommandError(
            f"{exc.operator_message()} [database: {settings.database_url_for_display()}]"
        ) from exc


def _require_database(settings: Settings) -> None:
    """Refuse to work on a SQLite file that does not exist rather than create an empty one.

    Run from another folder, the default ``./game-api.db`` is a new, empty file: without this
    check the command would create it and fail (or list nothing) without saying where it looked.
    """
    from app.db.revision import sqlite_file  # SQLAlchemy's URL parsing, only for SQLite

    path = sqlite_file(settings.DATABASE_URL.get_secret_value())
    if path is not None and not path.exists():
        raise CommandError(
            f"no database at {path.resolve()}: run `game-api db upgrade` first, or set "
            "DATABASE_URL (or --config) to the service's database"
        )


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
    _require_database(settings)
    created = _run_with_service(
        settings, lambda service: service.create(args.name, args.scope, args.expires_in)
    )
    if args.json:
        _print_json(CreatedKeyOut.of(created))
    else:
        _print_created(created, "Created a key. It is shown this once: store it now.")


def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> None:
    _require_database(settings)
    page = _run_with_service(
        settings,
        lambda service: service.list_keys(
            limit=args.limit,
            cursor=args.cursor,
            active_only=args.active,
            name_prefix=args.name_prefix,
        ),
    )
    listing = KeyListOut.of_page(page, utc_now())
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
        # Every column two spaces from the next; the last (the free-text name) is not padded.
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        print("  ".join([*cells, row[4]]))
    if listing.next_cursor is not None:
        print(f"next: {listing.next_cursor}")


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> None:
    _require_database(settings)
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
    _require_database(settings)
    prefix = checked_prefix(args.prefix)
    result = _run_with_service(settings, lambda service: service.rotate(prefix, args.grace))
    if args.json:
        _print_json(RotatedKeyOut.of_result(result, utc_now()))
    else:
        _print_created(result.new_key, f"Rotated {prefix}. The new key is shown this once:")
        expiry = result.old_record.expires_at
        print(f"  {prefix} stops working at {_when(expiry)}")
    _warn_unconfirmed(result.invalidation)


def cmd_audit_list(settings: Settings, args: argparse.Namespace) -> None:
    _require_database(settings)
    page = _run_with_service(
        settings,
        lambda service: service.list_audit(
            limit=args.limit, cursor=args.cursor, target_prefix=args.target
        ),
    )
    listing = AuditListOut.of_page(page)
    if args.json:
        _print_json(listing)
        return
    rows = [
        (
            str(entry.id),
            _when(entry.occurred_at),
            entry.actor_prefix,
            entry.action,
            entry.target_prefix,
            entry.detail or "-",
            entry.request_id or "-",
            entry.finality or "-",
        )
        for entry in listing.entries
    ]
    header = ("ID", "WHEN", "ACTOR", "ACTION", "TARGET", "DETAIL", "REQUEST", "FINALITY")
    last = len(header) - 1
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(last)]
    for row in [header, *rows]:
        # As ``keys list``: two spaces between columns, the last (free text) not padded.
        cells = [cell.ljust(width) for cell, width in zip(row[:last], widths, strict=True)]
        print("  ".join([*cells, row[last]]))
    if listing.next_cursor is not None:
        print(f"next: {listing.next_cursor}")


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


def _failure_summary(exc: Exception, secret: str) -> str:
    """An exception in a few words: the driver's own message, never the database password."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    text = f"{type(exc).__name__}: {reason[0][:200]}" if reason else type(exc).__name__
    return text.replace(secret, "***") if secret else text


def _upgrade(settings: Settings) -> None:
    """Apply the migrations, saying which database and what changed."""
    from sqlalchemy.engine import make_url

    from app.db.migrate import upgrade_database  # Alembic is only needed here
    from app.db.revision import current_revision, migrations_between, sqlite_file

    url = settings.DATABASE_URL.get_secret_value()
    shown = settings.database_url_for_display()
    say = _announcer(settings)
    say(f"database: {shown}")
    path = sqlite_file(url)
    if path is not None and not path.exists():
        say(f"creating a new SQLite database at {path.resolve()}")
    try:
        before = current_revision(url)
        upgrade_database(url)
        after = current_revision(url)
        applied = migrations_between(url, before, after)
    except Exception as exc:
        summary = _failure_summary(exc, make_url(url).password or "")
        raise CommandError(
            f"could not migrate the database {shown} ({summary}): check DATABASE_URL and that "
            "the database server is reachable"
        ) from exc
    if applied:
        plural = "migration" if applied == 1 else "migrations"
        say(f"applied {applied} {plural} (now at {after})")
    else:
        say(f"database schema already up to date ({after})")
    sys.stdout.flush()


def _database_answers(settings: Settings) -> bool:
    """Whether the database server answers at all (SQLite, a file, always does: and a ping
    would create a missing file before the upgrade could say it creates it)."""
    from app.db.revision import sqlite_file

    if sqlite_file(settings.DATABASE_URL.get_secret_value()) is not None:
        return True

    async def ping(service: ApiKeyService) -> bool:
        try:
            await service.check_repository()
        except RepositoryUnavailable:
            return False
        return True

    return _run_with_service(settings, ping)


def _announcer(settings: Settings) -> Callable[[str], None]:
    """Lines for the operator: plain on a terminal, log events when the logs are JSON (so that
    ``serve``'s output stays one parseable format)."""
    if settings.LOG_FORMAT != "json":
        return print

    def as_event(message: str) -> None:
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event = {"event": message, "logger": "game_api.cli", "level": "info", "timestamp": stamp}
        print(json.dumps(event))

    return as_event


def _check_port_free(host: str, port: int) -> None:
    """Fail before migrating when gunicorn could not listen, and say why in plain words."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise CommandError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        # As gunicorn does: a port left in TIME_WAIT by a stopped server is free to use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"port {port} on {host} is already in use: stop what listens there or "
                    "choose another --port"
                ) from None
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def bootstrap_admin(service: ApiKeyService) -> CreatedKey | None:
    """A first admin key when no active one exists; ``None`` when there is one already.

    One indexed query, not a listing: with a large table, reading every key outlived the
    database deadline and ``serve`` failed to start. The key carries every scope, because a key
    can grant only scopes it holds (``app.services.key_policy``): an ``admin``-only first key
    could not create the ``read`` and ``write`` keys players need.
    """
    if await service.has_active_admin():
        return None
    return await service.create(BOOTSTRAP_ADMIN_NAME, sorted(KNOWN_SCOPES))


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    from app.server import serve  # gunicorn is only needed here

    _check_port_free(args.host, args.port)
    if not _database_answers(settings):
        # A restart during a database outage: keys cached in Redis (and, within their lease,
        # in memory) can still be served; migrating must wait until the database is back.
        _announcer(settings)(
            f"database {settings.database_url_for_display()} is unreachable: serving without "
            "migrating (cached keys only until it answers; run `game-api db upgrade` then)"
        )
        serve(settings, args.host, args.port, args.workers)
        return
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


def _port(text: str) -> int:
    """A TCP port, checked before anything runs (no migration for a port that cannot be)."""
    value = _whole_number(text, 1)
    if value > MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a port between 1 and {MAX_PORT}: {text!r}")
    return value


def _version() -> str:
    try:
        return version("game-api")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


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
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser(
        "serve", parents=[common], help="apply migrations, then serve with gunicorn"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
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

    listing = keys.add_parser(
        "list", parents=[common, json_flag], help="list keys a page at a time (no secrets)"
    )
    listing.add_argument(
        "--limit", type=_positive, default=DEFAULT_PAGE_SIZE, metavar="N",
        help=f"keys per page, at most {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE})",
    )  # fmt: skip
    listing.add_argument(
        "--cursor", metavar="C", help="continue after a previous page (its next cursor)"
    )
    listing.add_argument(
        "--active", action="store_true", help="only keys neither revoked nor expired"
    )
    listing.add_argument("--name-prefix", metavar="P", help="only names starting with P")
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

    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True, parser_class=_Parser
    )
    audit_list = audit.add_parser(
        "list",
        parents=[common, json_flag],
        help="who created, revoked or rotated keys, newest first",
    )
    audit_list.add_argument("--target", metavar="PREFIX", help="only the actions on this key")
    audit_list.add_argument(
        "--limit", type=_positive, default=DEFAULT_AUDIT_PAGE_SIZE, metavar="N",
        help=f"entries per page, at most {MAX_PAGE_SIZE} (default {DEFAULT_AUDIT_PAGE_SIZE})",
    )  # fmt: skip
    audit_list.add_argument(
        "--cursor", metavar="C", help="continue after a previous page (its next cursor)"
    )
    audit_list.set_defaults(handler=cmd_audit_list)

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


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so the interpreter's last flush at exit
    does not fail again and print "Exception ignored ... BrokenPipeError"."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        configure_logging(
            settings.LOG_LEVEL if args.command == "serve" else "ERROR", settings.LOG_FORMAT
        )
        args.handler(settings, args)
        sys.stdout.flush()  # a reader that left early is noticed here, not at exit
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
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
