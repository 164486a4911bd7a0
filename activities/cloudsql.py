"""The backup gate through the Cloud SQL Admin API (REST): a successful backup
run newer than the catalog's maximum age, or, where policy allows, an on-demand
backup taken first with its operation polled to DONE."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from pydantic import BaseModel
from temporalio import activity

from runbook import activity_refs as refs
from runbook.migration_models import BackupCheck, BackupCheckRequest, BackupRunInfo

from .errors import permanent
from .heartbeat import Heartbeat
from .sqladmin import NotFound, SqlAdmin, operation_error


class BackupProgress(BaseModel):
    """The on-demand backup operation being followed."""

    operation: str


POLL_SECONDS = 2.0
BACKUP_TIMEOUT_SECONDS = 3600


def api_time(value: str | None) -> dt.datetime | None:
    """An RFC 3339 time of the API ('2026-11-28T14:05:00.123Z'), or None."""
    if not value:
        return None
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.year > 1970 else None


def backup_run_info(run: dict[str, Any]) -> BackupRunInfo:
    return BackupRunInfo(
        id=int(run["id"]),
        status=run.get("status", "SQL_BACKUP_RUN_STATUS_UNSPECIFIED"),
        type=run.get("type", ""),
        start_time=api_time(run.get("startTime")),
        end_time=api_time(run.get("endTime")),
    )


def require_project(given: str | None, default: str | None, setting: str) -> str:
    project = given or default
    if not project:
        raise permanent(
            f"no Cloud SQL project: set the catalog's {setting} or MODORU_CLOUDSQL_PROJECT",
            "CloudSqlNotConfigured",
        )
    return project


class CloudSqlActivities:
    def __init__(self, admin: SqlAdmin, project: str | None) -> None:
        self.admin = admin
        self.project = project

    async def _newest(
        self, project: str, instance: str
    ) -> tuple[BackupRunInfo | None, BackupRunInfo | None]:
        """(newest successful run, newest run of any status)."""
        try:
            items = await self.admin.backup_runs(project, instance)
        except NotFound as exc:
            raise permanent(
                f"Cloud SQL instance {instance!r} not found in project {project!r} "
                f"({exc.message}); check the catalog's migration.cloudsql_instance",
                "CloudSqlNotFound",
            ) from None
        runs = [backup_run_info(run) for run in items]
        runs.sort(
            key=lambda r: r.end_time or r.start_time or dt.datetime.min.replace(tzinfo=dt.UTC),
            reverse=True,
        )
        good = next((r for r in runs if r.status == "SUCCESSFUL" and r.end_time), None)
        return good, (runs[0] if runs else None)

    async def _take(self, project: str, instance: str) -> None:
        heartbeat = Heartbeat(BackupProgress)
        # A retried attempt follows the operation the first one started instead of starting another.
        started = heartbeat.resumed()
        name = started.operation if started else None
        # The description names this activity, so a retry whose first attempt's answer was lost
        # (or that died before its heartbeat) finds the run that attempt started.
        info = activity.info()
        description = (
            f"modoru: before a migration rollback ({info.workflow_id} {info.workflow_run_id} "
            f"activity {info.activity_id})"
        )
        if not name and await self._wait_for_earlier(project, instance, description, heartbeat):
            return
        if not name:
            operation = await self.admin.insert_backup_run(project, instance, description)
            name = operation["name"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BACKUP_TIMEOUT_SECONDS
        while True:
            heartbeat.beat(BackupProgress(operation=name))
            operation = await self.admin.operation(project, name)
            if operation.get("status") == "DONE":
                break
            if loop.time() > deadline:
                raise permanent(
                    f"the on-demand backup of {instance} ({name}) did not finish within "
                    f"{BACKUP_TIMEOUT_SECONDS}s",
                    "BackupTimeout",
                )
            await heartbeat.sleep(POLL_SECONDS, BackupProgress(operation=name))
        failed = operation_error(operation)
        if failed:
            raise permanent(f"the on-demand backup of {instance} failed: {failed}", "BackupFailed")

    async def _wait_for_earlier(
        self, project: str, instance: str, description: str, heartbeat: Heartbeat[BackupProgress]
    ) -> bool:
        """Whether an earlier attempt of this activity started a backup run; if so, wait for it
        to end (and fail as it failed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BACKUP_TIMEOUT_SECONDS
        while True:
            runs = await self.admin.backup_runs(project, instance)
            mine = next((r for r in runs if r.get("description") == description), None)
            if mine is None:
                return False
            status = mine.get("status", "")
            if status == "SUCCESSFUL":
                return True
            if status in ("FAILED", "SKIPPED", "DELETED"):
                raise permanent(
                    f"the on-demand backup of {instance} (run {mine.get('id')}) ended {status}",
                    "BackupFailed",
                )
            if loop.time() > deadline:
                raise permanent(
                    f"the on-demand backup of {instance} (run {mine.get('id')}) did not finish "
                    f"within {BACKUP_TIMEOUT_SECONDS}s",
                    "BackupTimeout",
                )
            await heartbeat.sleep(POLL_SECONDS, BackupProgress(operation=""))

    @activity.defn(name=refs.CHECK_BACKUP.name)
    async def check_backup(self, request: BackupCheckRequest) -> BackupCheck:
        project = require_project(request.project, self.project, "migration.cloudsql_project")
        oldest_allowed = dt.datetime.now(dt.UTC) - dt.timedelta(hours=request.max_age_hours)
        good, newest = await self._newest(project, request.instance)
        if good is not None and good.end_time and good.end_time >= oldest_allowed:
            return BackupCheck(
                ok=True,
                newest=good,
                detail=f"backup run {good.id} ({good.type}) finished "
                f"{good.end_time.isoformat()}, within {request.max_age_hours:g} h",
            )
        if good is None:
            missing = "no successful backup run" + (
                f" (newest run {newest.id} is {newest.status})" if newest else ""
            )
        else:
            age = (
                (dt.datetime.now(dt.UTC) - good.end_time).total_seconds() / 3600
                if good.end_time
                else float("inf")
            )
            missing = (
                f"the newest successful backup (run {good.id}) is {age:.1f} h old, older than "
                f"{request.max_age_hours:g} h"
            )
        if not request.take_if_missing:
            return BackupCheck(
                ok=False,
                newest=good,
                detail=f"{missing} for {project}:{request.instance}; take one (gcloud sql "
                f"backups create --instance {request.instance}) or allow on_demand_backup "
                "in the catalog",
            )
        await self._take(project, request.instance)
        good, _ = await self._newest(project, request.instance)
        if good is None or not good.end_time or good.end_time < oldest_allowed:
            return BackupCheck(
                ok=False,
                newest=good,
                detail=f"{missing}, and the on-demand backup did not produce a successful run",
            )
        return BackupCheck(
            ok=True,
            newest=good,
            taken=True,
            detail=f"{missing}; took on-demand backup run {good.id}, finished "
            f"{good.end_time.isoformat()}",
        )
