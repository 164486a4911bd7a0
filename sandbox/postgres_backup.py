"""Base backups, WAL archiving and point-in-time recovery for the sandbox's
PostgreSQL clusters: the half of PostgresCluster that a Cloud SQL backup run
and a Clone stand on."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import tarfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

SUPERUSER = "postgres"


class PostgresError(Exception):
    """One line saying what went wrong with the embedded PostgreSQL."""


@dataclass(frozen=True)
class BaseBackup:
    path: Path
    format: str
    label: str
    start_time: datetime
    start_lsn: str
    start_wal_file: str
    end_lsn: str
    timeline: int
    finished_at: datetime

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            path=str(self.path),
            start_time=self.start_time.isoformat(),
            finished_at=self.finished_at.isoformat(),
        )
        return data


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class BackupsAndRecovery:
    """Mixed into PostgresCluster, whose paths, runner and queries it uses."""

    async def switch_wal(self, *, wait: bool = True, timeout: float = 30) -> str:
        """Close the current WAL segment and return its file name; with `wait`,
        return only once the archiver has copied it into the archive."""
        rows = await self.execute("SELECT pg_walfile_name(pg_switch_wal())")
        walfile = rows[0][0]
        if wait:
            await self.wait_archived(walfile, timeout=timeout)
        return walfile

    async def wait_archived(self, walfile: str, *, timeout: float = 30) -> Path:
        target = self.archive_dir / walfile
        deadline = time.monotonic() + timeout
        while not target.exists():
            if time.monotonic() > deadline:
                rows = await self.execute(
                    "SELECT last_archived_wal, last_failed_wal, failed_count FROM pg_stat_archiver"
                )
                last, failed, count = rows[0]
                raise PostgresError(
                    f"WAL segment {walfile} was not archived within {timeout:.0f}s (last archived "
                    f"{last}, last failed {failed}, {count} failures; log: {self.log_path})"
                )
            await asyncio.sleep(0.05)
        return target

    def archived_wal(self) -> list[str]:
        return (
            sorted(p.name for p in self.archive_dir.iterdir() if not p.name.endswith(".part"))
            if self.archive_dir.is_dir()
            else []
        )

    async def base_backup(
        self, dest: Path | str, *, format: str = "plain", label: str | None = None
    ) -> BaseBackup:
        """pg_basebackup into `dest` (new or empty) with the WAL it needs
        streamed alongside; the backup is recorded in `<state>/backups.jsonl`."""
        if format not in ("plain", "tar"):
            raise PostgresError(f"backup format must be 'plain' or 'tar', not {format!r}")
        if not self.running:
            raise PostgresError(f"cannot back up: PostgreSQL at {self.data_dir} is not running")
        dest = Path(dest).absolute()
        if dest.exists() and any(dest.iterdir()):
            raise PostgresError(f"backup destination {dest} is not empty")
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        label = label or f"modoru {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
        await self._run(
            "pg_basebackup",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-D",
            str(dest),
            "-F",
            format[0],
            "-X",
            "stream",
            "-c",
            "fast",
            "-l",
            label,
            "-N",
            "-w",
            timeout=600,
        )
        # A plain backup is a data dir the server user must own to start from.
        self._chown_tree(dest)
        backup = self._describe_backup(dest, format)
        with self.catalog_path.open("a") as handle:
            handle.write(json.dumps(backup.to_json()) + "\n")
        return backup

    def _describe_backup(self, dest: Path, format: str) -> BaseBackup:
        if format == "plain":
            label_text = (dest / "backup_label").read_text()
        else:
            with tarfile.open(dest / "base.tar") as archive:
                member = archive.extractfile("backup_label")
                assert member is not None
                label_text = member.read().decode()
        fields = dict(line.split(": ", 1) for line in label_text.splitlines() if ": " in line)
        start = re.match(r"(\S+) \(file (\w+)\)", fields["START WAL LOCATION"])
        assert start is not None
        manifest = json.loads((dest / "backup_manifest").read_text())
        wal_range = manifest["WAL-Ranges"][-1]
        return BaseBackup(
            path=dest,
            format=format,
            label=fields["LABEL"],
            start_time=datetime.strptime(fields["START TIME"], "%Y-%m-%d %H:%M:%S %Z").replace(
                tzinfo=UTC
            ),
            start_lsn=start.group(1),
            start_wal_file=start.group(2),
            end_lsn=wal_range["End-LSN"],
            timeline=int(fields.get("START TIMELINE", wal_range["Timeline"])),
            finished_at=datetime.now(UTC),
        )

    async def archive_now(self, *, timeout: float = 30) -> datetime:
        """Make everything committed so far recoverable from the WAL archive
        and return the latest time a point-in-time recovery can target."""
        # Recovery to a time T stops at the first commit after T and fails if
        # the archive holds none, so commit one (an xid makes even an empty
        # transaction write a commit record) after the time returned, then
        # archive the segment that holds it.
        rows = await self.execute("SELECT now(), pg_current_xact_id()")
        await self.switch_wal(timeout=timeout)
        return rows[0][0]

    async def restore_base_backup(self, backup: Path | str) -> None:
        """Copy a plain base backup into this cluster's (absent or empty) data
        dir, ready for `recover`; the backup itself is only read."""
        backup = Path(backup)
        if not (backup / "PG_VERSION").is_file() or not (backup / "backup_label").is_file():
            raise PostgresError(
                f"{backup} is not a plain base backup (it has no PG_VERSION or no backup_label)"
            )
        self._check_paths()
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise PostgresError(
                f"cannot restore a base backup into {self.data_dir}: it is not empty"
            )

        def copy() -> None:
            shutil.copytree(
                backup,
                self.data_dir,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("postmaster.pid", "postmaster.opts"),
            )
            self.data_dir.chmod(0o700)
            self._chown_tree(self.data_dir)

        await asyncio.to_thread(copy)

    async def recover(
        self, archive_dir: Path | str, target_time: datetime, *, timeout: float = 300
    ) -> None:
        """Start a data dir restored by `restore_base_backup` in archive
        recovery: replay WAL from `archive_dir` (only read) up to
        `target_time` inclusive, promote, and return once the server takes
        writes. A recovery that cannot reach the target raises PostgresError
        naming PostgreSQL's reason and leaves the server stopped."""
        if target_time.tzinfo is None:
            raise ValueError(
                "target_time must carry a UTC offset: PostgreSQL would read it in the server's "
                "time zone"
            )
        if not self.initialized:
            raise PostgresError(
                f"nothing to recover: {self.data_dir} holds no cluster (restore a base backup "
                "first)"
            )
        archive = shlex.quote(str(Path(archive_dir).absolute()))
        settings = {
            "restore_command": _conf_quote(f"cp {archive}/%f %p"),
            "recovery_target_time": _conf_quote(target_time.astimezone(UTC).isoformat(sep=" ")),
            "recovery_target_inclusive": "on",
            "recovery_target_action": "'promote'",
        }
        conf = self.data_dir / "modoru-recovery.conf"
        # Kept after the promotion as a record: without recovery.signal the server ignores these
        # settings.
        conf.write_text(
            "# written by modoru's sandbox for a point-in-time recovery\n"
            + "".join(f"{k} = {v}\n" for k, v in settings.items())
        )
        main_conf = self.data_dir / "postgresql.conf"
        if "include_if_exists = 'modoru-recovery.conf'" not in main_conf.read_text():
            with main_conf.open("a") as handle:
                handle.write("include_if_exists = 'modoru-recovery.conf'\n")
        signal = self.data_dir / "recovery.signal"
        signal.touch()
        for path in (conf, main_conf, signal):
            self._chown_tree(path)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        where = f"point-in-time recovery to {target_time.astimezone(UTC).isoformat()}"
        try:
            await self.start()
        except PostgresError as exc:
            raise PostgresError(f"{where} failed: {exc}") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not (await self.execute("SELECT pg_is_in_recovery()"))[0][0]:
                    return
            except psycopg.OperationalError:
                if not (self.data_dir / "postmaster.pid").exists():
                    self.running = False
                    reason = self._log_fatal(offset) or "the server stopped"
                    raise PostgresError(
                        f"{where} failed: {reason} (log: {self.log_path})"
                    ) from None
            if time.monotonic() > deadline:
                await self.stop()
                raise PostgresError(
                    f"{where} did not finish within {timeout:.0f}s; the server is stopped (log: "
                    f"{self.log_path})"
                )
            await asyncio.sleep(0.1)

    def backups(self) -> list[dict[str, Any]]:
        if not self.catalog_path.exists():
            return []
        return [
            json.loads(line) for line in self.catalog_path.read_text().splitlines() if line.strip()
        ]
