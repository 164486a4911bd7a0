"""`python -m sandbox.app`: the tekutoko-api image's entry point for database chores.

Exit codes: 0 done, 1 the command ran and failed (database error, dirty
database, unknown version), 2 it was called wrong (arguments, environment)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..kube import podnet
from .migrate import MIGRATIONS_DIR, MigrateError, Migrator, load_migrations
from .seed import seed

FAIL_VERSION_ENV = "SANDBOX_MIGRATE_FAIL_VERSION"


class UsageError(Exception):
    """Called wrong: exit 2."""


def _through_pod_loopback(params: dict[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """In a pod with a Cloud SQL Auth Proxy sidecar, localhost:<port> is the proxy's
    listener: connect where it leads (sandbox.kube.podnet). MigrateError if nothing listens
    there."""
    if podnet.LOOPBACK_ENV not in env or not podnet.is_loopback(params.get("host", "")):
        return params
    port = int(params.get("port") or 5432)
    try:
        host, port = podnet.translate(params.get("host", ""), port, env)
    except podnet.Refused:
        where = f"{params.get('host') or 'localhost'}:{port}/{params.get('dbname') or '?'}"
        raise MigrateError(
            f"cannot connect to the database at {where}: Connection refused"
        ) from None
    return {**params, "host": host, "port": str(port)}


def conninfo_from_env(env: Mapping[str, str]) -> str:
    """DATABASE_URL, or DATABASE_HOST/PORT/NAME/USER/PASSWORD as the pod's env gives them."""
    if env.get("DATABASE_URL"):
        if podnet.LOOPBACK_ENV not in env:
            return env["DATABASE_URL"]
        return make_conninfo(**_through_pod_loopback(conninfo_to_dict(env["DATABASE_URL"]), env))
    missing = [
        key for key in ("DATABASE_HOST", "DATABASE_NAME", "DATABASE_USER") if not env.get(key)
    ]
    if missing:
        raise UsageError(
            "no database configured: set DATABASE_URL, or DATABASE_HOST, DATABASE_NAME and "
            f"DATABASE_USER (missing {', '.join(missing)})"
        )
    port = env.get("DATABASE_PORT") or "5432"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"DATABASE_PORT must be a port number, not {port!r}")
    params = _through_pod_loopback(
        {"host": env["DATABASE_HOST"], "port": port, "dbname": env["DATABASE_NAME"]}, env
    )
    return make_conninfo(
        host=params["host"],
        port=params["port"],
        dbname=env["DATABASE_NAME"],
        user=env["DATABASE_USER"],
        password=env.get("DATABASE_PASSWORD") or None,
        connect_timeout=10,
        application_name="tekutoko-api",
    )


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} must be a whole number, not {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be at least {minimum}, not {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--migrations",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"migration files (default: MIGRATIONS_DIR or {MIGRATIONS_DIR.name}/ beside this app)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.app",
        description="tekutoko-api database chores. Connection from DATABASE_URL or "
        "DATABASE_HOST/PORT/NAME/USER/PASSWORD.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{migrate,seed}")
    migrate = commands.add_parser(
        "migrate", parents=[common], help="golang-migrate style schema migrations"
    )
    actions = migrate.add_subparsers(
        dest="action", required=True, metavar="{version,history,up,down,down-to,force}"
    )
    actions.add_parser(
        "version", parents=[common], help="print the current version ('N (dirty)' when dirty)"
    )
    actions.add_parser(
        "history", parents=[common], help="list the migrations and which are applied"
    )
    up = actions.add_parser(
        "up", parents=[common], help="apply all pending migrations, or the next N"
    )
    up.add_argument("n", nargs="?", type=_int_at_least(1, "N"), metavar="N")
    down = actions.add_parser("down", parents=[common], help="revert the last N migrations")
    down.add_argument("n", type=_int_at_least(1, "N"), metavar="N")
    down_to = actions.add_parser(
        "down-to",
        parents=[common],
        help="revert migrations until the database is at version V (0: all)",
    )
    down_to.add_argument("v", type=_int_at_least(0, "V"), metavar="V")
    force = actions.add_parser(
        "force",
        parents=[common],
        help="set version V and clear dirty without running SQL (-1: no version)",
    )
    force.add_argument("v", type=_int_at_least(-1, "V"), metavar="V")
    commands.add_parser("seed", help="insert sample users and walks (safe to repeat)")
    return parser


def _migrations_dir(args: argparse.Namespace, env: Mapping[str, str]) -> Path:
    chosen = getattr(args, "migrations", None) or env.get("MIGRATIONS_DIR")
    directory = Path(chosen) if chosen else MIGRATIONS_DIR
    if not directory.is_dir():
        raise UsageError(f"migrations dir {directory} does not exist")
    return directory


def _fail_version(env: Mapping[str, str]) -> int | None:
    text = env.get(FAIL_VERSION_ENV)
    if not text:
        return None
    if not text.isdigit():
        raise UsageError(f"{FAIL_VERSION_ENV} must be a migration version, not {text!r}")
    return int(text)


def _connect(conninfo: str) -> psycopg.Connection:
    try:
        return psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
        where = f"{params.get('host', '?')}:{params.get('port', 5432)}/{params.get('dbname', '?')}"
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise MigrateError(f"cannot connect to the database at {where}: {reason}") from None


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    conninfo = conninfo_from_env(env)
    if args.command == "seed":
        with _connect(conninfo) as conn:
            added = seed(conn)
        print("seeded: " + ", ".join(f"{count} new {table}" for table, count in added.items()))
        return 0
    migrations = load_migrations(_migrations_dir(args, env))
    fail_version = _fail_version(env)
    with _connect(conninfo) as conn:
        migrator = Migrator(conn, migrations, fail_version=fail_version)
        if args.action == "version":
            print(migrator.version())
        elif args.action == "history":
            print("\n".join(migrator.history()))
        elif args.action == "up":
            migrator.up(args.n)
        elif args.action == "down":
            migrator.down(args.n)
        elif args.action == "down-to":
            migrator.down_to(args.v)
        elif args.action == "force":
            migrator.force(args.v)
    return 0


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return run(args, os.environ if env is None else env)
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except MigrateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"error: {(exc.diag.message_primary or str(exc)).strip()}", file=sys.stderr)
        return 1
