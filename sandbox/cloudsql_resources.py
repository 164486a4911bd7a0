"""The Cloud SQL emulator's records (instances, backup runs, operations) and
how each one reads as a `google.cloud.sql.v1` message.

Records keep plain strings for enum values ("SUCCESSFUL", "BACKUP_VOLUME")
so that tests can set them directly; enum members are accepted too."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.cloud.sqladmin_v1 import types as sql

from .postgres import BaseBackup, PostgresCluster

API_ROOT = "https://sqladmin.googleapis.com/v1"
RUN_TYPES = ("AUTOMATED", "ON_DEMAND")
# Cloud SQL's rule for instance IDs.
INSTANCE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,97}$")
# DatabaseInstance has no port field: each instance's own port is this user label.
PORT_LABEL = "sandbox-port"


class ApiError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(enum_type: Any, value: Any) -> Any:
    return enum_type[value] if isinstance(value, str) else enum_type(value)


def _message(message_type: Any, **fields: Any) -> Any:
    # Unset times and errors stay absent on the wire, as the real API leaves them.
    return message_type(**{key: value for key, value in fields.items() if value is not None})


@dataclass
class BackupRunRecord:
    id: int
    instance: str
    type: str  # AUTOMATED or ON_DEMAND
    path: Path  # the plain base backup: a data dir to restore from
    enqueued_time: datetime
    status: str = "ENQUEUED"
    start_time: datetime | None = None
    end_time: datetime | None = None
    error: str | None = None
    description: str = ""
    # Start LSN, first WAL file and timeline: where a point-in-time restore
    # starts replaying the instance's WAL archive from.
    backup: BaseBackup | None = None


@dataclass
class OperationRecord:
    name: str
    operation_type: str
    # The operation's target: for a CLONE, the new instance, which exists
    # only once the operation is done.
    instance: str
    insert_time: datetime
    status: str = "PENDING"
    start_time: datetime | None = None
    end_time: datetime | None = None
    error: tuple[str, str] | None = None  # (code, message), as OperationError has them
    backup_run_id: int | None = None
    user: str = "modoru-sandbox"

    def begin(self) -> None:
        self.status, self.start_time = "RUNNING", utcnow()

    def finish(self, error: tuple[str, str] | None = None) -> None:
        self.status, self.end_time, self.error = "DONE", utcnow(), error


@dataclass
class Instance:
    """One Cloud SQL for PostgreSQL instance: a real cluster whose state dir
    also holds its base backups (`backups/<run id>/`) beside its WAL archive."""

    name: str
    cluster: PostgresCluster
    database: str
    user: str
    password: str
    project: str
    region: str
    # The cluster archives its WAL either way (it costs nothing here); the flag
    # decides whether GetLatestRecoveryTime and Clone to a point in time are allowed.
    pitr_enabled: bool = True
    backups_enabled: bool = True
    tier: str = "db-custom-2-8192"
    backup_start_time: str = "18:00"  # UTC: 03:00 in Tokyo
    transaction_log_retention_days: int = 7
    retained_backups: int = 7
    database_version: str = "POSTGRES_18"
    installed_version: str = "POSTGRES_18"
    created_at: datetime = field(default_factory=utcnow)
    backup_runs: list[BackupRunRecord] = field(default_factory=list)
    operations: list[OperationRecord] = field(default_factory=list)
    # Cloud SQL runs one backup of an instance at a time; later ones wait ENQUEUED.
    backup_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def state_dir(self) -> Path:
        return self.cluster.state_dir

    @property
    def backups_dir(self) -> Path:
        return self.state_dir / "backups"

    @property
    def archive_dir(self) -> Path:
        return self.cluster.archive_dir

    @property
    def connection_name(self) -> str:
        return f"{self.project}:{self.region}:{self.name}"

    @property
    def self_link(self) -> str:
        return f"{API_ROOT}/projects/{self.project}/instances/{self.name}"

    def app_env(self) -> dict[str, str]:
        return self.cluster.app_env(self.database, self.user, self.password)

    def backup_run(self, run_id: int) -> BackupRunRecord:
        for run in self.backup_runs:
            if run.id == run_id:
                return run
        raise KeyError(run_id)

    def runs_newest_first(self) -> list[BackupRunRecord]:
        return sorted(self.backup_runs, key=lambda run: (run.enqueued_time, run.id), reverse=True)

    def successful_backups(self) -> list[BackupRunRecord]:
        """Oldest first: the candidates a restore to a point in time picks from."""
        return [run for run in reversed(self.runs_newest_first()) if _enum(sql.SqlBackupRunStatus, run.status) == sql.SqlBackupRunStatus.SUCCESSFUL]


def instance_message(instance: Instance) -> sql.DatabaseInstance:
    running = instance.cluster.running
    backup = sql.BackupConfiguration(
        kind="sql#backupConfiguration", enabled=instance.backups_enabled, start_time=instance.backup_start_time,
        point_in_time_recovery_enabled=instance.pitr_enabled,
        transaction_log_retention_days=instance.transaction_log_retention_days,
        backup_retention_settings=sql.BackupRetentionSettings(
            retention_unit=sql.BackupRetentionSettings.RetentionUnit.COUNT, retained_backups=instance.retained_backups,
        ),
    )
    settings = sql.Settings(
        kind="sql#settings", settings_version=1, tier=instance.tier, edition=sql.Settings.Edition.ENTERPRISE,
        availability_type=sql.SqlAvailabilityType.ZONAL, pricing_plan=sql.SqlPricingPlan.PER_USE,
        # A stopped cluster reads like an instance someone stopped: still RUNNABLE, policy NEVER.
        activation_policy=sql.Settings.SqlActivationPolicy.ALWAYS if running else sql.Settings.SqlActivationPolicy.NEVER,
        data_disk_type=sql.SqlDataDiskType.PD_SSD, data_disk_size_gb=10,
        ip_configuration=sql.IpConfiguration(ipv4_enabled=True), backup_configuration=backup,
        user_labels={PORT_LABEL: str(instance.cluster.port)},
    )
    return sql.DatabaseInstance(
        kind="sql#instance", name=instance.name, project=instance.project, region=instance.region,
        gce_zone=f"{instance.region}-b", database_version=_enum(sql.SqlDatabaseVersion, instance.database_version),
        database_installed_version=instance.installed_version, state=sql.DatabaseInstance.SqlInstanceState.RUNNABLE,
        backend_type=sql.SqlBackendType.SECOND_GEN, instance_type=sql.SqlInstanceType.CLOUD_SQL_INSTANCE,
        connection_name=instance.connection_name, self_link=instance.self_link, create_time=instance.created_at,
        ip_addresses=[sql.IpMapping(type_=sql.SqlIpAddressType.PRIMARY, ip_address=instance.cluster.host)],
        settings=settings,
    )


def backup_run_message(instance: Instance, run: BackupRunRecord) -> sql.BackupRun:
    return _message(
        sql.BackupRun, kind="sql#backupRun", id=run.id, instance=instance.name,
        self_link=f"{instance.self_link}/backupRuns/{run.id}", status=_enum(sql.SqlBackupRunStatus, run.status),
        type_=_enum(sql.SqlBackupRunType, run.type), backup_kind=sql.SqlBackupKind.SNAPSHOT,
        database_version=_enum(sql.SqlDatabaseVersion, instance.database_version), description=run.description,
        enqueued_time=run.enqueued_time, window_start_time=run.enqueued_time, start_time=run.start_time,
        end_time=run.end_time, time_zone="UTC",
        error=sql.OperationError(kind="sql#operationError", code="INTERNAL_ERROR", message=run.error) if run.error else None,
    )


def operation_message(instance: Instance, op: OperationRecord) -> sql.Operation:
    error = None
    if op.error is not None:
        code, message = op.error
        error = sql.OperationErrors(kind="sql#operationErrors", errors=[sql.OperationError(kind="sql#operationError", code=code, message=message)])
    backup = sql.BackupContext(kind="sql#backupContext", backup_id=op.backup_run_id) if op.backup_run_id is not None else None
    return _message(
        sql.Operation, kind="sql#operation", name=op.name, status=_enum(sql.Operation.SqlOperationStatus, op.status),
        operation_type=_enum(sql.Operation.SqlOperationType, op.operation_type), user=op.user,
        target_id=op.instance, target_project=instance.project, target_link=f"{API_ROOT}/projects/{instance.project}/instances/{op.instance}",
        self_link=f"{API_ROOT}/projects/{instance.project}/operations/{op.name}",
        insert_time=op.insert_time, start_time=op.start_time, end_time=op.end_time, error=error, backup_context=backup,
    )
