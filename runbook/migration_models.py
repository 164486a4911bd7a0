"""What flows through a migration rollback: the request, the pod exec, the
backup gate, the database snapshot, the status and the result."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .catalog import NAME_PATTERN, DatabaseAccess, IntegrityCheck
from .decisions import GateView, Grant, SignedDecision
from .enums import Phase, Severity
from .models import AuditEntry, CheckResult, Model

OUTPUT_KEPT = 8000  # characters of stdout/stderr kept per command in the audit trail


class MigrationRequest(Model):
    service: str = Field(
        pattern=NAME_PATTERN, max_length=253, description="a service in the catalog"
    )
    steps: int | None = Field(None, ge=1, le=1000, description="migrations to revert; default 1")
    to_version: int | None = Field(None, ge=0, description="revert down to this version (0: all)")
    severity: Severity = Severity.INVESTIGATE
    reason: str = Field(min_length=1, max_length=2000)
    requested_by: str = Field(min_length=1, max_length=200)
    detected_at: dt.datetime | None = None
    dry_run: bool = False
    language: Literal["ja", "en"] = "ja"
    start: SignedDecision | None = Field(None, description="the requester's signed start")

    @model_validator(mode="after")
    def _one_target(self) -> MigrationRequest:
        if self.steps is not None and self.to_version is not None:
            raise ValueError("give --steps or --to-version, not both")
        return self

    @field_validator("detected_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("detected_at needs a time zone offset, e.g. 2026-01-16T12:00:00+09:00")
        return value


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


class SnapshotRequest(Model):
    """Read the tables and the integrity numbers with psql in one of the deployment's pods."""

    namespace: str
    deployment: str
    access: DatabaseAccess
    checks: list[IntegrityCheck] = Field(default_factory=list)


class DatabaseSnapshot(Model):
    at: dt.datetime
    tables: list[str]
    values: dict[str, float | None] = Field(default_factory=dict)


class MigrationStatus(Model):
    workflow_id: str
    phase: Phase
    service: str
    namespace: str = ""
    deployment: str = ""
    severity: Severity
    requested_by: str
    reason: str
    detected_at: dt.datetime
    sla_deadline: dt.datetime
    sla_met: bool | None = None
    from_version: int | None = None
    to_version: int | None = None
    steps: int | None = None
    dirty: bool = False
    backup: BackupCheck | None = None
    approvals_required: int = 0
    approvals: list[str] = Field(default_factory=list)
    pending: GateView | None = Field(
        None, description="the gate awaiting decisions and the plan to sign"
    )
    escalations: list[str] = Field(default_factory=list)
    commands: list[ExecResult] = Field(default_factory=list)
    before: DatabaseSnapshot | None = None
    after: DatabaseSnapshot | None = None
    integrity: list[CheckResult] = Field(default_factory=list)
    audit: list[AuditEntry] = Field(default_factory=list)
    timings: dict[str, dt.datetime] = Field(default_factory=dict)
    message: str = ""


class MigrationResult(Model):
    status: MigrationStatus
    no_op: bool = False
