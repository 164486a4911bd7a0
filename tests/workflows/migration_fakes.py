"""A scripted schema and Cloud SQL for MigrationRollbackWorkflow tests and replay
recordings: `migrate version/history/down-to` answer like the sample app."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import activity_refs as refs
from runbook.catalog import (
    ApprovalPolicy,
    Channel,
    DatabaseAccess,
    IntegrityCheck,
    MigrationConfig,
    ServiceEntry,
)
from runbook.migration_models import (
    BackupCheck,
    BackupCheckRequest,
    BackupRunInfo,
    DatabaseSnapshot,
    ExecRequest,
    ExecResult,
    SnapshotRequest,
)
from runbook.migrations import fill
from runbook.models import Notice, NoticeResult, ServiceByName

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@dataclass
class FakeSchema:
    version: int | None = 5
    dirty: bool = False
    available: tuple[int, ...] = (1, 2, 3, 4, 5)
    backup_ok: bool = True
    fail_down: bool = False
    rows_after: float = 10.0
    commands: list[list[str]] = field(default_factory=list)
    snapshots: int = 0
    notices: list[Notice] = field(default_factory=list)
    entry: ServiceEntry = field(
        default_factory=lambda: ServiceEntry(
            name="tekutoko-api",
            deployment="tekutoko-api",
            service="tekutoko-api",
            approval=ApprovalPolicy(approvers=["sre-lead", "backend-lead", "dba"]),
            channels=[Channel(kind="console")],
            database=DatabaseAccess(database="tekutoko_production", user="tekutoko"),
            migration=MigrationConfig(
                cloudsql_instance="tekutoko-db",
                integrity_checks=[IntegrityCheck(name="users", sql="SELECT count(*) FROM users")],
            ),
        )
    )

    def _answer(self, command: list[str]) -> tuple[int, str, str]:
        action = command[2]
        if action == "version":
            shown = "nil" if self.version is None else str(self.version)
            return 0, f"{shown} (dirty)\n" if self.dirty else f"{shown}\n", ""
        if action == "history":
            lines = ["VERSION  NAME  STATE"] + [
                f"{v:<8} m{v}  "
                f"{'applied' if self.version is not None and v <= self.version else 'pending'}"
                for v in self.available
            ]
            return 0, "\n".join(lines) + "\n", ""
        if action == "down-to":
            target = int(command[3])
            if self.fail_down:
                self.version, self.dirty = (self.version or 1) - 1, True
                return 1, "", f'error: migration {self.version} failed: column "x" does not exist\n'
            self.version = target or None
            return 0, f"reverted to {target}\n", ""
        return 2, "", f"unknown action {action}\n"

    def activities(self) -> list:
        @activity.defn(name=refs.SERVICE.name)
        async def service(request: ServiceByName) -> ServiceEntry:
            if request.name != self.entry.name:
                raise ApplicationError(
                    f"service {request.name!r} is not in the service catalog",
                    type="UnknownService",
                    non_retryable=True,
                )
            return self.entry

        @activity.defn(name=refs.EXEC.name)
        async def exec_(request: ExecRequest) -> ExecResult:
            config = self.entry.migration
            command = {"version": config.version_command, "history": config.history_command}.get(
                request.action
            ) or fill(config.down_to_command, version=request.version or 0, steps=request.steps)
            self.commands.append(command)
            code, out, err = self._answer(command)
            return ExecResult(
                pod="tekutoko-api-abc",
                container="api",
                command=command,
                exit_code=code,
                stdout=out,
                stderr=err,
            )

        @activity.defn(name=refs.CHECK_BACKUP.name)
        async def check_backup(request: BackupCheckRequest) -> BackupCheck:
            if self.backup_ok:
                return BackupCheck(
                    ok=True,
                    detail="backup run 7 finished an hour ago",
                    newest=BackupRunInfo(id=7, status="SUCCESSFUL", end_time=T0),
                )
            return BackupCheck(
                ok=False, detail="no successful backup run for tekutoko-prod:tekutoko-db"
            )

        @activity.defn(name=refs.DB_SNAPSHOT.name)
        async def snapshot(request: SnapshotRequest) -> DatabaseSnapshot:
            self.snapshots += 1
            rows = 10.0 if self.snapshots == 1 else self.rows_after
            return DatabaseSnapshot(
                at=T0, tables=["schema_migrations", "users", "walks"], values={"users": rows}
            )

        @activity.defn(name=refs.NOTIFY.name)
        async def notify(notice: Notice) -> NoticeResult:
            self.notices.append(notice)
            return NoticeResult(delivered=["console"])

        return [service, exec_, check_backup, snapshot, notify]
