"""Schema migrations with golang-migrate's rules, so the sandbox's tekutoko-api
fails and recovers the way the real one does.

- Files are `NNNNNN_name.up.sql` / `NNNNNN_name.down.sql`; other files are ignored.
- `schema_migrations(version bigint, dirty boolean)` holds one row: the version
  the schema is at. No row means no migration was ever applied.
- Before a migration runs, the target version is written with dirty=true;
  only a migration that committed clears it. A dirty database refuses every
  further up or down until someone looks at it and forces a version.
- Reverting version V moves the database to the version before V, so a
  failing down leaves that earlier version dirty.
- A database at a version these files don't know (a newer release ran its
  migrations, then the image was rolled back) refuses up and down.

Unlike golang-migrate, each migration runs in one transaction, so a failure
leaves nothing half-applied; the dirty flag still records that it failed."""

from __future__ import annotations

import re
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import psycopg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE = re.compile(r"^(\d+)_(.+)\.(up|down)\.sql$")
LOCK_TIMEOUT = 15.0


class MigrateError(Exception):
    """A failure to report as `error: <message>` with exit code 1."""


class DirtyError(MigrateError):
    def __init__(self, version: int) -> None:
        super().__init__(f"Dirty database version {version}. Fix and force version.")
        self.version = version


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: Path | None
    down: Path | None


def load_migrations(directory: Path) -> list[Migration]:
    if not directory.is_dir():
        raise MigrateError(f"migrations dir {directory} does not exist")
    found: dict[int, dict[str, object]] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE.match(path.name)
        if not match:
            continue
        version, name, direction = int(match.group(1)), match.group(2), match.group(3)
        entry = found.setdefault(version, {"name": name})
        if direction in entry:
            raise MigrateError(
                f"duplicate migration file: {path.name} (version {version} already has an "
                f"{direction} file)"
            )
        entry[direction] = path
    return [
        Migration(version, str(entry["name"]), entry.get("up"), entry.get("down"))  # type: ignore[arg-type]
        for version, entry in sorted(found.items())
    ]


class Migrator:
    def __init__(
        self,
        conn: psycopg.Connection,
        migrations: list[Migration],
        *,
        fail_version: int | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.conn = conn
        self.migrations = migrations
        self.by_version = {m.version: m for m in migrations}
        self.fail_version = fail_version
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        conn.autocommit = True

    # --- the version row ------------------------------------------------------------

    def ensure_table(self) -> None:
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, "
            "dirty boolean NOT NULL)"
        )

    def current(self) -> tuple[int | None, bool]:
        """(version, dirty); version None when nothing was ever applied."""
        self.ensure_table()
        row = self.conn.execute("SELECT version, dirty FROM schema_migrations LIMIT 1").fetchone()
        if row is None:
            return None, False
        version, dirty = row
        return (None if version < 0 else version), dirty

    def _set_version(self, version: int | None, dirty: bool) -> None:
        with self.conn.transaction():
            self.conn.execute("TRUNCATE schema_migrations")
            # golang-migrate's nil version is -1, stored only when dirty (a
            # failed down of the first migration).
            if version is not None or dirty:
                self.conn.execute(
                    "INSERT INTO schema_migrations (version, dirty) VALUES (%s, %s)",
                    (-1 if version is None else version, dirty),
                )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # One migrator per database at a time, across processes.
        key = zlib.crc32(f"modoru-sandbox-migrate:{self.conn.info.dbname}".encode()) & 0x7FFFFFFF
        deadline = time.monotonic() + LOCK_TIMEOUT
        while not self.conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise MigrateError(
                    f"timed out after {LOCK_TIMEOUT:.0f}s waiting for another migrate run on this "
                    "database to finish"
                )
            time.sleep(0.1)
        try:
            yield
        finally:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def _start(self) -> int | None:
        """Check the database may be migrated; return its version."""
        version, dirty = self.current()
        if dirty:
            raise DirtyError(-1 if version is None else version)
        if version is not None and version not in self.by_version:
            newest = self.migrations[-1].version if self.migrations else None
            raise MigrateError(
                f"no migration found for version {version}: the database is at a version these "
                "migrations "
                f"(newest {newest}) do not know; run the migrations of the release that applied it"
            )
        return version

    # --- running one step -----------------------------------------------------------

    def _run(self, migration: Migration, direction: str, target: int | None) -> None:
        path = migration.up if direction == "up" else migration.down
        label = f"{migration.version}/{direction[0]} {migration.name}"
        started = time.monotonic()
        self._set_version(target, dirty=True)
        if path is None:
            print(
                f"warning: {label} has no {direction} file: only the version moves", file=self.err
            )
        try:
            with self.conn.transaction():
                if path is not None:
                    self.conn.execute(path.read_text())
                if direction == "up" and migration.version == self.fail_version:
                    # A fault injected by the sandbox: fail after the SQL ran, as a
                    # statement late in a long migration would.
                    self.conn.execute(
                        "DO $$ BEGIN RAISE EXCEPTION 'injected failure in migration %', "
                        + str(migration.version)
                        + "; END $$"
                    )
                self._set_version(target, dirty=False)
        except psycopg.Error as exc:
            shown = "nil" if target is None else target
            reason = (exc.diag.message_primary or str(exc)).strip()
            raise MigrateError(
                f"migration {label} failed: {reason} (in {path.name if path else 'no file'}); "
                f"the database is at version {shown}, dirty: fix it, then run `migrate force "
                "<version>`"
            ) from None
        print(f"{label} ({(time.monotonic() - started) * 1000:.1f}ms)", file=self.out)

    def _steps_down(self, version: int | None, count: int) -> int:
        """Revert up to `count` migrations from `version`; return how many ran."""
        done = 0
        versions = [m.version for m in self.migrations]
        while done < count and version is not None:
            index = versions.index(version)
            target = versions[index - 1] if index > 0 else None
            self._run(self.by_version[version], "down", target)
            version = target
            done += 1
        return done

    # --- commands ---------------------------------------------------------------------

    def up(self, limit: int | None = None) -> None:
        with self._locked():
            version = self._start()
            pending = [m for m in self.migrations if version is None or m.version > version]
            if not pending:
                print("no change", file=self.out)
                return
            for migration in pending[:limit]:
                self._run(migration, "up", migration.version)
            if limit is not None and limit > len(pending):
                raise MigrateError(
                    f"limit {limit} short by {limit - len(pending)}: only {len(pending)} "
                    "migrations were pending"
                )

    def down(self, count: int) -> None:
        with self._locked():
            version = self._start()
            if version is None:
                raise MigrateError("no migration to revert: the database has no version")
            done = self._steps_down(version, count)
            if done < count:
                raise MigrateError(
                    f"limit {count} short by {count - done}: reverted {done}, no older migration "
                    "is applied"
                )

    def down_to(self, target: int) -> None:
        """Revert every migration newer than `target` (0: all of them)."""
        with self._locked():
            version = self._start()
            if target != 0 and target not in self.by_version:
                raise MigrateError(
                    f"no migration found for version {target}: known versions are "
                    f"{', '.join(str(m.version) for m in self.migrations)}"
                )
            if version is None or version == target:
                print("no change", file=self.out)
                return
            if target > version:
                raise MigrateError(
                    f"cannot go down to version {target}: the database is at version {version}; "
                    "use `migrate up`"
                )
            self._steps_down(
                version, sum(1 for m in self.migrations if target < m.version <= version)
            )

    def force(self, version: int) -> None:
        """Set the version and clear dirty without running anything (-1: no version)."""
        self.ensure_table()
        with self._locked():
            self._set_version(None if version == -1 else version, dirty=False)
        print(f"forced version {version}", file=self.out)

    def version(self) -> str:
        version, dirty = self.current()
        if version is None and not dirty:
            raise MigrateError("no migration")
        shown = "nil" if version is None else str(version)
        return f"{shown} (dirty)" if dirty else shown

    def history(self) -> list[str]:
        version, dirty = self.current()
        width = max([len(m.name) for m in self.migrations] + [4])
        lines = [f"{'VERSION':<8} {'NAME':<{width}} STATE"]
        for m in self.migrations:
            applied = version is not None and m.version <= version
            state = "applied" if applied else "pending"
            if m.version == version:
                state = "dirty (current; failed or interrupted)" if dirty else "applied (current)"
            lines.append(f"{m.version:<8} {m.name:<{width}} {state}")
        if version is not None and version not in self.by_version:
            lines.append(
                f"{version:<8} {'?':<{width}} {'dirty ' if dirty else ''}(current; not in these "
                "migrations)"
            )
        if version is None and dirty:
            lines.append(f"{'nil':<8} {'':<{width}} dirty (a revert of the first migration failed)")
        return lines
