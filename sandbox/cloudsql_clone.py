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
from typing import Any

from .cloudsql_resources import INSTANCE_NAME, ApiError, Instance
from .postgres import _MAX_SOCKET_DIR, PostgresCluster, PostgresError


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _restorable_backups(instance: Instance) -> list[tuple[datetime, Path]]:
    # Only runs that really produced a base backup: tests may mark records SUCCESSFUL by hand.
    return [
        (run.end_time, run.path)
        for run in instance.successful_backups()
        if run.end_time is not None and run.backup is not None
    ]


async def recovery_window(instance: Instance) -> tuple[datetime, datetime]:
    """(earliest, latest) times `instance` can be cloned to; archives the
    source's current WAL segment on the way."""
    if not instance.pitr_enabled:
        raise ApiError(
            400,
            f"Point-in-time recovery is not enabled for instance {instance.name}. "
            "Enable it (settings.backupConfiguration.pointInTimeRecoveryEnabled) and take a "
            "backup first.",
            status="FAILED_PRECONDITION",
            reason="failedPrecondition",
        )
    backups = _restorable_backups(instance)
    if not backups:
        raise ApiError(
            400,
            f"Instance {instance.name} has no successful backup to recover from yet. Take a "
            "backup first.",
            status="FAILED_PRECONDITION",
            reason="failedPrecondition",
        )
    if not instance.cluster.running:
        raise ApiError(
            400,
            f"Instance {instance.name} is not running, so its latest transaction log cannot be "
            "archived. Start it first.",
            status="FAILED_PRECONDITION",
            reason="failedPrecondition",
        )
    try:
        latest = await instance.cluster.archive_now()
    except PostgresError as exc:
        raise ApiError(
            500, f"Could not archive the transaction log of instance {instance.name}: {exc}"
        ) from None
    oldest_end = min(end for end, _ in backups)
    return max(oldest_end, latest - timedelta(days=instance.transaction_log_retention_days)), latest


def check_destination(name: str, taken: bool, instances_dir: Path) -> None:
    """INVALID_ARGUMENT or ALREADY_EXISTS unless `name` is free for a new instance."""
    if not name:
        raise ApiError(400, "Missing required parameter: cloneContext.destinationInstanceName.")
    if not INSTANCE_NAME.match(name):
        raise ApiError(
            400,
            f"Invalid request: {name!r} is not a valid instance name (lowercase letters, digits "
            "and hyphens, starting with a letter).",
        )
    if taken:
        raise ApiError(
            409, f"The Cloud SQL instance already exists: {name}.", reason="instanceAlreadyExists"
        )
    state_dir = instances_dir / name
    # Like a deleted instance's name on Cloud SQL, the name of one whose files remain is not free.
    if state_dir.exists():
        raise ApiError(
            409,
            f"The Cloud SQL instance already exists: the files of an earlier instance {name} "
            f"remain in {state_dir}; remove them or choose another name.",
            reason="instanceAlreadyExists",
        )
    if len(str(state_dir / "run")) > _MAX_SOCKET_DIR:
        raise ApiError(
            400,
            f"Invalid request: instance name {name!r} is too long for the emulator's socket "
            f"paths under {instances_dir}.",
        )


def parse_time(value: Any, field: str) -> datetime:
    """A google-datetime (RFC 3339) request field, or the API's 400 for a bad one."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ApiError(
            400,
            f"Invalid value at '{field}' (type.googleapis.com/google.protobuf.Timestamp), "
            f'"{value}"',
        )
    return moment


def requested_point(context: dict[str, Any], project: str) -> datetime:
    """The point in time of a clone request, or 400 for what the emulator cannot do."""
    if context.get("destinationProject") and context["destinationProject"] != project:
        raise ApiError(
            400,
            f"Invalid request: the emulator clones within project {project} only, not into "
            f"{context['destinationProject']}.",
        )
    if "binLogCoordinates" in context:
        raise ApiError(400, "Invalid request: binLogCoordinates apply to MySQL instances only.")
    if context.get("databaseNames"):
        raise ApiError(400, "Invalid request: databaseNames apply to SQL Server instances only.")
    if "pitrTimestampMs" in context and "pointInTime" not in context:
        raise ApiError(
            400,
            "Invalid request: the emulator takes cloneContext.pointInTime, not pitrTimestampMs.",
        )
    if "pointInTime" not in context:
        raise ApiError(
            400,
            "Invalid request: cloneContext.pointInTime is required; the emulator clones to a "
            "point in time only "
            "(GetLatestRecoveryTime gives the latest one).",
        )
    return parse_time(context["pointInTime"], "clone_context.point_in_time")


def check_in_window(
    instance: Instance, point: datetime, earliest: datetime, latest: datetime
) -> None:
    if not earliest <= point <= latest:
        raise ApiError(
            400,
            f"Invalid request: the point in time {_iso(point)} is outside the recovery window of "
            "instance "
            f"{instance.name}: it can be recovered to any time from {_iso(earliest)} to "
            f"{_iso(latest)}.",
        )


async def restore_clone(source: Instance, name: str, point: datetime, state_dir: Path) -> Instance:
    """A new running instance `name` holding `source`'s data as of `point`
    (commits at `point` included), restored into `state_dir`. Raises
    PostgresError (the server stopped, the files kept) if that fails."""
    candidates = [(end, path) for end, path in _restorable_backups(source) if end <= point]
    if not candidates:
        raise PostgresError(
            f"no successful backup of instance {source.name} ended by {_iso(point)}, so there is "
            "nothing to replay from"
        )
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
        name=name,
        cluster=cluster,
        database=source.database,
        user=source.user,
        password=source.password,
        project=source.project,
        region=source.region,
        pitr_enabled=True,
        backups_enabled=source.backups_enabled,
        tier=source.tier,
        backup_start_time=source.backup_start_time,
        transaction_log_retention_days=source.transaction_log_retention_days,
        retained_backups=source.retained_backups,
        database_version=source.database_version,
        installed_version=source.installed_version,
    )
