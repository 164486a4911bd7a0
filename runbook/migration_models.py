"""What flows through a migration rollback: the request, the pod exec, the
backup gate, the database snapshot, the status and the result."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, model_validator

from .catalog import NAME_PATTERN, DatabaseAccess, IntegrityCheck
from .decisions import Grant
from .models import CheckResult, DeploymentRef, DetectedRequest, Escalating, GatedStatus, Model

OUTPUT_KEPT = 8000  # characters of stdout/stderr kept per command in the audit trail


class MigrationRequest(DetectedRequest):
    service: str = Field(
        pattern=NAME_PATTERN, max_length=253, description="a service in the catalog"
    )
    steps: int | None = Field(None, ge=1, le=1000, description="migrations to revert; default 1")
    to_version: int | None = Field(None, ge=0, description="revert down to this version (0: all)")
    dry_run: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> MigrationRequest:
        if self.steps is not None and self.to_version is not None:
            raise ValueError("give --steps or --to-version, not both")
        return self


class ExecRequest(Model):
    """One of the service's catalog commands (never a free command line), filled in
    and run by the activity from its own catalog."""

    service: str
    action: Literal["version", "history", "down_to"]
    version: int | None = Field(None, ge=0, description="down_to: the target version")
    steps: int = Field(0, ge=0)
    grant: Grant | None = Field(
        None, description="down_to: the signed approvals, checked again by the activity"
    )


class ExecResult(Model):
    pod: str
    container: str
    command: list[str]
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    at: dt.datetime | None = None


class BackupCheckRequest(Model):
    instance: str
    project: str | None = None
    max_age_hours: float = Field(gt=0)
    take_if_missing: bool = False


class BackupRunInfo(Model):
    id: int
    status: str
    type: str = ""
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None


class BackupCheck(Model):
    ok: bool
    detail: str
    newest: BackupRunInfo | None = None
    taken: bool = False


class SnapshotRequest(DeploymentRef):
    """Read the tables and the integrity numbers with psql in one of the deployment's pods."""

    access: DatabaseAccess
    checks: list[IntegrityCheck] = Field(default_factory=list)


class DatabaseSnapshot(Model):
    at: dt.datetime
    tables: list[str]
    values: dict[str, float | None] = Field(default_factory=dict)


class MigrationStatus(Escalating, GatedStatus):
    service: str
    namespace: str = ""
    deployment: str = ""
    from_version: int | None = None
    to_version: int | None = None
    steps: int | None = None
    dirty: bool = False
    backup: BackupCheck | None = None
    commands: list[ExecResult] = Field(default_factory=list)
    before: DatabaseSnapshot | None = None
    after: DatabaseSnapshot | None = None
    integrity: list[CheckResult] = Field(default_factory=list)


class MigrationResult(Model):
    status: MigrationStatus
    no_op: bool = False
