"""`python -m sandbox.app.psql`: `psql` in the tekutoko-api image.

The real `psql` of the embedded PostgreSQL, with its host and port taken
through the pod's loopback (`sandbox.kube.podnet`): in a pod whose Cloud SQL
Auth Proxy sidecar names an instance, `psql -h localhost -p 5432` reaches that
instance. Every other argument is passed on unchanged.

The host and port are read as psql reads them: `-h/--host`, `-p/--port`, a
connection string or URI given as the database name (`-d` or the first
positional argument), then PGHOST/PGPORT, with "no host" (a Unix socket, which
the pod does not have) taken as localhost and 5432 as the default port. A
loopback port with no listener gives psql's own "Connection refused" and exit
status 2, without running psql.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..kube import podnet

# psql's getopt string: "aAbc:d:eEf:F:h:HlL:no:p:P:qR:sStT:U:v:VwWxXz?01"
SHORT_WITH_VALUE = set("cdfFhLopPRTUv")
LONG_WITH_VALUE = {
    "command",
    "dbname",
    "file",
    "field-separator",
    "host",
    "log-file",
    "output",
    "port",
    "pset",
    "record-separator",
    "table-attr",
    "username",
    "set",
    "variable",
}
EXIT_CONNECTION = 2  # psql: "the connection to the server went bad"


class Args:
    """psql's argv split into what locates the server and everything else, order kept."""

    def __init__(self, argv: list[str]) -> None:
        self.items: list[list[str]] = []  # each option with its value, or one positional
        self.host: str | None = None
        self.port: str | None = None
        self.dbname_at: int | None = None  # index in items of the database name (option value last)
        positional = 0
        i = 0
        while i < len(argv):
            arg = argv[i]
            if arg == "--":
                for rest in argv[i + 1 :]:
                    self._positional(rest, positional)
                    positional += 1
                break
            if arg.startswith("--") and len(arg) > 2:
                name, eq, value = arg[2:].partition("=")
                if name in LONG_WITH_VALUE and not eq and i + 1 < len(argv):
                    i += 1
                    value, item = argv[i], [arg, argv[i]]
                elif name in LONG_WITH_VALUE and eq:
                    item = [f"--{name}", value]
                else:
                    item = [arg]
                self._option(name, value, item)
            elif arg.startswith("-") and len(arg) > 1:
                item = [arg]
                for j, letter in enumerate(arg[1:], start=1):
                    if letter in SHORT_WITH_VALUE:
                        value = arg[j + 1 :]
                        if value:
                            item = [arg[: j + 1], value]
                        elif i + 1 < len(argv):
                            i += 1
                            value = argv[i]
                            item.append(value)
                        self._option(letter, value, item)
                        break
                else:
                    self.items.append(item)
            else:
                self._positional(arg, positional)
                positional += 1
            i += 1

    def _option(self, name: str, value: str, item: list[str]) -> None:
        if name in ("h", "host"):
            self.host = value
        elif name in ("p", "port"):
            self.port = value
        elif name in ("d", "dbname"):
            self.dbname_at = len(self.items)
        # -h/-p (alone or at the end of a cluster such as -Xh) are dropped here and given again as
        # PGHOST/PGPORT.
        if name in ("h", "host", "p", "port"):
            if item[0].startswith("--"):
                return
            letters = item[0][1:].split(name[0], 1)[0]
            if letters:
                self.items.append([f"-{letters}"])
            return
        self.items.append(item)

    def _positional(self, arg: str, index: int) -> None:
        if index == 0 and self.dbname_at is None:
            self.dbname_at = len(self.items)
        self.items.append([arg])

    def dbname(self) -> str | None:
        return None if self.dbname_at is None else self.items[self.dbname_at][-1]

    def set_dbname(self, value: str) -> None:
        assert self.dbname_at is not None
        self.items[self.dbname_at][-1] = value

    def argv(self) -> list[str]:
        return [part for item in self.items for part in item]


def _is_conninfo(text: str) -> bool:
    return "=" in text or text.startswith(("postgresql://", "postgres://"))


def refused(host: str, port: int) -> str:
    shown = host or "localhost"
    address = "127.0.0.1" if shown in ("localhost", "") else shown
    return (
        f'psql: error: connection to server at "{shown}" ({address}), port {port} failed: '
        "Connection refused\n"
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
    )


def rewrite(argv: list[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment for the real psql; podnet.Refused if the target port is closed."""
    env = dict(env)
    if podnet.LOOPBACK_ENV not in env:
        return argv, env
    args = Args(argv)
    dbname = args.dbname()
    if dbname and _is_conninfo(dbname):
        params = conninfo_to_dict(dbname)
        if "host" in params or "port" in params:
            host = str(params.get("host") or args.host or env.get("PGHOST") or "")
            port = int(str(params.get("port") or args.port or env.get("PGPORT") or 5432))
            real_host, real_port = podnet.translate(host, port, env)
            params.update(host=real_host, port=str(real_port))
            args.set_dbname(make_conninfo(**params))
    host = args.host if args.host is not None else env.get("PGHOST", "")
    port = int(args.port or env.get("PGPORT") or 5432)
    real_host, real_port = podnet.translate(host, port, env)
    env.update(PGHOST=real_host, PGPORT=str(real_port))
    return args.argv(), env


def psql_path() -> str:
    from ..postgres import find_bin_dir

    return str(find_bin_dir() / "psql")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, env = rewrite(argv, os.environ)
    except podnet.Refused as exc:
        sys.stderr.write(refused(exc.host, exc.port))
        return EXIT_CONNECTION
    except ValueError as exc:  # a port that is not a number, a bad connection string
        sys.stderr.write(f"psql: error: {exc}\n")
        return 1
    path = psql_path()
    os.execve(path, [path, *args], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
