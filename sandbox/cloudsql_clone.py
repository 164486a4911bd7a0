"""Point-in-time recovery for the Cloud SQL emulator, done the way Cloud SQL
does it for PostgreSQL: a new instance restored from a base backup of the
source, with the source's archived WAL replayed up to the requested time.

The recovery window that GetLatestRecoveryTime reports and Clone enforces:

- earliest: the end of the oldest successful backup (no earlier than the
  transaction log retention allows). Replay may stop only once the backup's
  end is reached; PostgreSQL refuses an earlier target ("requested recovery
  stop point is before consistent recovery point"), so the backup's start
  would be a promise the archive cannot keep.
- latest: the moment of the request. Answering commits a marker transaction,
  switches WAL and waits for the archiver, so the archive always holds a
  commit after that moment: replay to a time stops at the first commit after
  it, and without one it ends with "recovery ended before configured recovery
  target was reached".

The source is only ever read: its base backup is copied, and the clone's
restore_command copies segments out of the source's WAL archive. The clone
gets its own port and archives into its own archive from the promotion on. A
clone that fails is stopped, not registered, and its files stay where they
are for inspection."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from google.cloud.sqladmin_v1 import types as sql

from .cloudsql_resources import INSTANCE_NAME, ApiError, Instance
from .postgres import _MAX_SOCKET_DIR, PostgresCluster, PostgresError


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _restorable_backups(instance: Instance) -> list[tuple[datetime, Path]]:
    # Only runs that really produced a base backup: tests may mark records SUCCESSFUL by hand.
    return [(run.end_time, run.path) for run in instance.successful_backups() if run.end_time is not None and run.backup is not None]


async def recovery_window(instance: Instance) -> tuple[datetime, datetime]:
    """(earliest, latest) times `instance` can be cloned to; archives the
    source's current WAL segment on the way."""
    if not instance.pitr_enabled:
        raise ApiError(grpc.StatusCode.FAILED_PRECONDITION,
                       f"Point-in-time recovery is not enabled for instance {instance.name}. "
                       "Enable it (settings.backupConfiguration.pointInTimeRecoveryEnabled) and take a backup first.")
    backups = _restorable_backups(instance)
    if not backups:
        raise ApiError(grpc.StatusCode.FAILED_PRECONDITION,
                       f"Instance {instance.name} has no successful backup to recover from yet. Take a backup first.")
    if not instance.cluster.running:
        raise ApiError(grpc.StatusCode.FAILED_PRECONDITION,
                       f"Instance {instance.name} is not running, so its latest transaction log cannot be archived. Start it first.")
    try:
        latest = await instance.cluster.archive_now()
    except PostgresError as exc:
        raise ApiError(grpc.StatusCode.INTERNAL, f"Could not archive the transaction log of instance {instance.name}: {exc}") from None
    oldest_end = min(end for end, _ in backups)
    return max(oldest_end, latest - timedelta(days=instance.transaction_log_retention_days)), latest


def check_destination(name: str, taken: bool, instances_dir: Path) -> None:
    """INVALID_ARGUMENT or ALREADY_EXISTS unless `name` is free for a new instance."""
    if not name:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "Missing required parameter: cloneContext.destinationInstanceName.")
    if not INSTANCE_NAME.match(name):
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid request: {name!r} is not a valid instance name (lowercase letters, digits and hyphens, starting with a letter).")
    if taken:
        raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"The Cloud SQL instance already exists: {name}.")
    state_dir = instances_dir / name
    # Like a deleted instance's name on Cloud SQL, the name of one whose files remain is not free.
    if state_dir.exists():
        raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"The Cloud SQL instance already exists: the files of an earlier instance {name} remain in {state_dir}; remove them or choose another name.")
    if len(str(state_dir / "run")) > _MAX_SOCKET_DIR:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid request: instance name {name!r} is too long for the emulator's socket paths under {instances_dir}.")


def requested_point(context: sql.CloneContext, project: str) -> datetime:
    """The point in time of a clone request, or INVALID_ARGUMENT for what the emulator cannot do."""
    if context.destination_project and context.destination_project != project:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid request: the emulator clones within project {project} only, not into {context.destination_project}.")
    if "bin_log_coordinates" in context:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "Invalid request: binLogCoordinates apply to MySQL instances only.")
    if context.database_names:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "Invalid request: databaseNames apply to SQL Server instances only.")
    if "point_in_time" not in context:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                       "Invalid request: cloneContext.pointInTime is required; the emulator clones to a point in time only "
                       "(GetLatestRecoveryTime gives the latest one).")
    return context.point_in_time


def check_in_window(instance: Instance, point: datetime, earliest: datetime, latest: datetime) -> None:
    if not earliest <= point <= latest:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"Invalid request: the point in time {_iso(point)} is outside the recovery window of instance "
                       f"{instance.name}: it can be recovered to any time from {_iso(earliest)} to {_iso(latest)}.")


async def restore_clone(source: Instance, name: str, point: datetime, state_dir: Path) -> Instance:
    """A new running instance `name` holding `source`'s data as of `point`
    (commits at `point` included), restored into `state_dir`. Raises
    PostgresError (the server stopped, the files kept) if that fails."""
    candidates = [(end, path) for end, path in _restorable_backups(source) if end <= point]
    if not candidates:
        raise PostgresError(f"no successful backup of instance {source.name} ended by {_iso(point)}, so there is nothing to replay from")
    _, backup_path = max(candidates)
    cluster = PostgresCluster(state_dir)
    try:
        await cluster.restore_base_backup(backup_path)
        await cluster.recover(source.archive_dir, point)
    except BaseException as exc:
        with contextlib.suppress(PostgresError):
            await cluster.stop()
        if isinstance(exc, Exception) and not isinstance(exc, PostgresError | OSError):
            raise PostgresError(f"restoring {name} failed unexpectedly: {exc!r}") from exc
        raise
    # A clone inherits the source's settings, as on Cloud SQL; it has no backups of its own yet.
    return Instance(
        name=name, cluster=cluster, database=source.database, user=source.user, password=source.password,
        project=source.project, region=source.region, pitr_enabled=True, backups_enabled=source.backups_enabled,
        tier=source.tier, backup_start_time=source.backup_start_time,
        transaction_log_retention_days=source.transaction_log_retention_days, retained_backups=source.retained_backups,
        database_version=source.database_version, installed_version=source.installed_version,
    )
