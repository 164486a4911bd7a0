"""The backup gate through the Cloud SQL Admin API (official client): a
successful backup run newer than the catalog's maximum age, or, where policy
allows, an on-demand backup taken first with its operation polled to the end."""

from __future__ import annotations

import asyncio
import datetime as dt

from google.api_core import exceptions
from google.cloud import sqladmin_v1 as sql
from temporalio import activity

from runbook.migration_models import BackupCheck, BackupCheckRequest, BackupRunInfo

from .errors import permanent

POLL_SECONDS = 2.0
BACKUP_TIMEOUT_SECONDS = 3600


def proto_time(stamp) -> dt.datetime | None:
    if not stamp:
        return None
    value = stamp if isinstance(stamp, dt.datetime) else stamp.ToDatetime(tzinfo=dt.UTC)
    return value if value.year > 1970 else None


def backup_run_info(run: sql.BackupRun) -> BackupRunInfo:
    return BackupRunInfo(id=run.id, status=sql.SqlBackupRunStatus(run.status).name, type=sql.SqlBackupRunType(run.type_).name,
                         start_time=proto_time(run.start_time), end_time=proto_time(run.end_time))


class CloudSqlActivities:
    def __init__(self, backup_runs: sql.SqlBackupRunsServiceAsyncClient, operations: sql.SqlOperationsServiceAsyncClient, project: str | None) -> None:
        self.backup_runs = backup_runs
        self.operations = operations
        self.project = project

    async def _call(self, what: str, instance: str, project: str, coro):
        try:
            return await coro
        except exceptions.NotFound as exc:
            raise permanent(f"Cloud SQL instance {instance!r} not found in project {project!r} ({exc.message}); check the catalog's migration.cloudsql_instance", "CloudSqlNotFound") from None
        except (exceptions.PermissionDenied, exceptions.Unauthenticated) as exc:
            raise permanent(f"Cloud SQL Admin refused {what} ({exc.message}): the worker needs roles/cloudsql.viewer (and cloudsql.editor for on-demand backups)", "CloudSqlDenied") from None
        except exceptions.InvalidArgument as exc:
            raise permanent(f"Cloud SQL Admin rejected {what}: {exc.message}", "CloudSqlInvalid") from None

    async def _newest(self, project: str, instance: str) -> tuple[BackupRunInfo | None, BackupRunInfo | None]:
        """(newest successful run, newest run of any status)."""
        response = await self._call("listing backup runs", instance, project, self.backup_runs.list(
            request=sql.SqlBackupRunsListRequest(project=project, instance=instance, max_results=50)))
        runs = [backup_run_info(run) for run in response.items]
        runs.sort(key=lambda r: r.end_time or r.start_time or dt.datetime.min.replace(tzinfo=dt.UTC), reverse=True)
        good = next((r for r in runs if r.status == "SUCCESSFUL" and r.end_time), None)
        return good, (runs[0] if runs else None)

    async def _take(self, project: str, instance: str) -> None:
        operation = await self._call("starting an on-demand backup", instance, project, self.backup_runs.insert(
            request=sql.SqlBackupRunsInsertRequest(project=project, instance=instance, body=sql.BackupRun(description="modoru: before a migration rollback"))))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BACKUP_TIMEOUT_SECONDS
        while operation.status != sql.Operation.SqlOperationStatus.DONE:
            if loop.time() > deadline:
                raise permanent(f"the on-demand backup of {instance} ({operation.name}) did not finish within {BACKUP_TIMEOUT_SECONDS}s", "BackupTimeout")
            activity.heartbeat({"operation": operation.name})
            await asyncio.sleep(POLL_SECONDS)
            operation = await self._call("polling the backup operation", instance, project, self.operations.get(
                request=sql.SqlOperationsGetRequest(project=project, operation=operation.name)))
        if operation.error and operation.error.errors:
            first = operation.error.errors[0]
            raise permanent(f"the on-demand backup of {instance} failed: {first.code}: {first.message}", "BackupFailed")

    @activity.defn(name="cloudsql.check_backup")
    async def check_backup(self, request: BackupCheckRequest) -> BackupCheck:
        project = request.project or self.project
        if not project:
            raise permanent("no Cloud SQL project: set the catalog's migration.cloudsql_project or MODORU_CLOUDSQL_PROJECT", "CloudSqlNotConfigured")
        oldest_allowed = dt.datetime.now(dt.UTC) - dt.timedelta(hours=request.max_age_hours)
        good, newest = await self._newest(project, request.instance)
        if good is not None and good.end_time and good.end_time >= oldest_allowed:
            return BackupCheck(ok=True, newest=good, detail=f"backup run {good.id} ({good.type}) finished {good.end_time.isoformat()}, within {request.max_age_hours:g} h")
        if good is None:
            missing = "no successful backup run" + (f" (newest run {newest.id} is {newest.status})" if newest else "")
        else:
            age = (dt.datetime.now(dt.UTC) - good.end_time).total_seconds() / 3600 if good.end_time else float("inf")
            missing = f"the newest successful backup (run {good.id}) is {age:.1f} h old, older than {request.max_age_hours:g} h"
        if not request.take_if_missing:
            return BackupCheck(ok=False, newest=good, detail=f"{missing} for {project}:{request.instance}; take one (gcloud sql backups create --instance {request.instance}) or allow on_demand_backup in the catalog")
        await self._take(project, request.instance)
        good, _ = await self._newest(project, request.instance)
        if good is None or not good.end_time or good.end_time < oldest_allowed:
            return BackupCheck(ok=False, newest=good, detail=f"{missing}, and the on-demand backup did not produce a successful run")
        return BackupCheck(ok=True, newest=good, taken=True, detail=f"{missing}; took on-demand backup run {good.id}, finished {good.end_time.isoformat()}")
