"""The Cloud SQL emulator's records (instances, backup runs, operations) and
how each one reads as a resource of the Cloud SQL Admin REST API v1: the JSON
that `sqladmin.v1.json` describes (camelCase fields, enum names as strings,
int64 as decimal strings, times in RFC 3339 UTC, `kind` on every resource).

Records keep plain strings for enum values ("SUCCESSFUL", "BACKUP_VOLUME")."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .postgres import BaseBackup, PostgresCluster

API_ROOT = "https://sqladmin.googleapis.com/v1"
RUN_TYPES = ("AUTOMATED", "ON_DEMAND")
# Cloud SQL's rule for instance IDs.
INSTANCE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,97}$")

# Google's canonical error codes (google.rpc.Code) by the HTTP status each maps to.
STATUS_FOR_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    """An error answer in Google's JSON shape: HTTP status, canonical status, message,
    and the legacy `errors[].reason` the Cloud SQL API still sends."""

    def __init__(
        self, http_status: int, message: str, *, reason: str = "", status: str | None = None
    ) -> None:
        super().__init__(message)
        self.http_status, self.message = http_status, message
        self.status = status or STATUS_FOR_HTTP.get(http_status, "UNKNOWN")
        self.reason = reason or {
            400: "invalid",
            403: "forbidden",
            404: "notFound",
            409: "alreadyExists",
        }.get(http_status, "backendError")

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.http_status,
                "message": self.message,
                "status": self.status,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
            }
        }


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _resource(**fields: Any) -> dict[str, Any]:
    # Unset times and errors stay absent on the wire, as the real API leaves them.
    return {key: value for key, value in fields.items() if value is not None}


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
        return [run for run in reversed(self.runs_newest_first()) if run.status == "SUCCESSFUL"]

    @property
    def private_ip(self) -> str:
        """The sandbox's VPC is the loopback: the instance's private address is where its
        PostgreSQL listens (its port is not part of the API; pods reach it through the
        Auth Proxy sidecar the sandbox models)."""
        return self.cluster.host


def instance_resource(instance: Instance) -> dict[str, Any]:
    running = instance.cluster.running
    backup = {
        "kind": "sql#backupConfiguration",
        "enabled": instance.backups_enabled,
        "startTime": instance.backup_start_time,
        "pointInTimeRecoveryEnabled": instance.pitr_enabled,
        "transactionLogRetentionDays": instance.transaction_log_retention_days,
        "backupRetentionSettings": {
            "retentionUnit": "COUNT",
            "retainedBackups": instance.retained_backups,
        },
    }
    settings = {
        "kind": "sql#settings",
        "settingsVersion": "1",
        "tier": instance.tier,
        "edition": "ENTERPRISE",
        "availabilityType": "ZONAL",
        "pricingPlan": "PER_USE",
        # A stopped cluster reads like an instance someone stopped: still RUNNABLE, policy NEVER.
        "activationPolicy": "ALWAYS" if running else "NEVER",
        "dataDiskType": "PD_SSD",
        "dataDiskSizeGb": "10",
        # Private IP, as a GKE app reaches it through the Auth Proxy's --private-ip.
        "ipConfiguration": {
            "ipv4Enabled": False,
            "privateNetwork": f"projects/{instance.project}/global/networks/default",
            "sslMode": "ENCRYPTED_ONLY",
        },
        "backupConfiguration": backup,
    }
    return _resource(
        kind="sql#instance",
        name=instance.name,
        project=instance.project,
        region=instance.region,
        gceZone=f"{instance.region}-b",
        databaseVersion=instance.database_version,
        databaseInstalledVersion=instance.installed_version,
        state="RUNNABLE",
        backendType="SECOND_GEN",
        instanceType="CLOUD_SQL_INSTANCE",
        connectionName=instance.connection_name,
        selfLink=instance.self_link,
        createTime=rfc3339(instance.created_at),
        ipAddresses=[{"type": "PRIVATE", "ipAddress": instance.private_ip}],
        settings=settings,
    )


def backup_run_resource(instance: Instance, run: BackupRunRecord) -> dict[str, Any]:
    return _resource(
        kind="sql#backupRun",
        id=str(run.id),
        instance=instance.name,
        selfLink=f"{instance.self_link}/backupRuns/{run.id}",
        status=run.status,
        type=run.type,
        backupKind="SNAPSHOT",
        databaseVersion=instance.database_version,
        description=run.description or None,
        enqueuedTime=rfc3339(run.enqueued_time),
        windowStartTime=rfc3339(run.enqueued_time),
        startTime=rfc3339(run.start_time),
        endTime=rfc3339(run.end_time),
        timeZone="UTC",
        error={"kind": "sql#operationError", "code": "INTERNAL_ERROR", "message": run.error}
        if run.error
        else None,
    )


def operation_resource(instance: Instance, op: OperationRecord) -> dict[str, Any]:
    error = None
    if op.error is not None:
        code, message = op.error
        error = {
            "kind": "sql#operationErrors",
            "errors": [{"kind": "sql#operationError", "code": code, "message": message}],
        }
    backup = (
        {"kind": "sql#backupContext", "backupId": str(op.backup_run_id)}
        if op.backup_run_id is not None
        else None
    )
    return _resource(
        kind="sql#operation",
        name=op.name,
        status=op.status,
        operationType=op.operation_type,
        user=op.user,
        targetId=op.instance,
        targetProject=instance.project,
        targetLink=f"{API_ROOT}/projects/{instance.project}/instances/{op.instance}",
        selfLink=f"{API_ROOT}/projects/{instance.project}/operations/{op.name}",
        insertTime=rfc3339(op.insert_time),
        startTime=rfc3339(op.start_time),
        endTime=rfc3339(op.end_time),
        error=error,
        backupContext=backup,
    )
