"""Point-in-time recovery through the Cloud SQL Admin API (REST): the recovery
window and pre-checks, the clone, its operation (checked in the
infrequent-polling way: one look per attempt, Temporal's retries space them),
and the clone's connection name and addresses. The source instance is only
ever read.

Whether an instance exists is asked with `instances.get`, and a 403 to it is
confirmed with `instances.list` (SqlAdmin.instance): Cloud SQL has answered
403 rather than 404 for an instance that does not exist, so a free destination
must not fail the recovery as "denied". Listing is the confirmation because it
needs only cloudsql.instances.list, which roles/cloudsql.viewer grants with the
get, and because it errs the safe way: a name it shows is taken, whatever the
get said. Taking a 403 as "free" unconfirmed would be wrong the other way: a get
refused by an IAM condition on an existing instance would read as free.

The latest recovery time trails the present while the source's transaction
logs are shipped. A restore point inside that gap (past, but not yet
recoverable) is not refused: the check fails retryably and looks again when the
window should have reached it, within the workflow's retry budget."""

from __future__ import annotations

import datetime as dt

from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import activity_refs as refs
from runbook.pitr_models import (
    CloneRequest,
    InstanceInfo,
    InstanceRef,
    OperationRef,
    PitrCheck,
    PitrCheckRequest,
)

from .cloudsql import api_time, backup_run_info, require_project
from .errors import permanent
from .gatekeeper import Gatekeeper
from .sqladmin import Conflict, NotFound, SqlAdmin, operation_error

SETTING = "pitr.cloudsql_project"
# How far behind a restore point the window's end may be and still be waited for: beyond
# this the window is not catching up (logs not shipped at all), and that is a problem to show.
CATCH_UP_LIMIT = dt.timedelta(minutes=15)
CATCH_UP_MARGIN = dt.timedelta(seconds=2)
CATCH_UP_RECHECK = dt.timedelta(seconds=60)  # look again at least this often while waiting


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class PitrActivities:
    def __init__(
        self, admin: SqlAdmin, project: str | None, gatekeeper: Gatekeeper | None = None
    ) -> None:
        self.admin = admin
        self.project = project
        self.gatekeeper = gatekeeper

    @activity.defn(name=refs.PITR_CHECK.name)
    async def pitr_check(self, request: PitrCheckRequest) -> PitrCheck:
        """Everything that must hold before a clone is created; problems are listed, not raised.
        The one exception: a past restore point that the recovery window has not reached yet,
        with nothing else wrong, is a retryable failure whose next retry comes when the window
        should reach it."""
        project = require_project(request.project, self.project, SETTING)
        source = await self.admin.instance(project, request.source)
        if source is None:
            return PitrCheck(
                pitr_enabled=False,
                destination_free=False,
                problems=[
                    f"Cloud SQL instance {request.source!r} does not exist in project {project!r}"
                ],
            )
        problems: list[str] = []
        backup_config = (source.get("settings") or {}).get("backupConfiguration") or {}
        enabled = bool(backup_config.get("pointInTimeRecoveryEnabled"))
        earliest = latest = None
        waiting_for: dt.timedelta | None = None
        if not enabled:
            problems.append(
                f"point-in-time recovery is not enabled on {request.source}: enable it (gcloud "
                f"sql instances patch {request.source} --enable-point-in-time-recovery); it only "
                "covers time after that"
            )
        else:
            try:
                window = await self.admin.latest_recovery_time(project, request.source)
                earliest, latest = (
                    api_time(window.get("earliestRecoveryTime")),
                    api_time(window.get("latestRecoveryTime")),
                )
            except ApplicationError as exc:
                if exc.non_retryable is False:
                    raise
                problems.append(
                    f"cannot read the recovery window of {request.source}: {exc.message}"
                )
        now = dt.datetime.now(dt.UTC)
        if request.point_in_time > now:
            problems.append(
                f"the restore point {request.point_in_time.isoformat()} is in the future (now "
                f"{now.isoformat(timespec='seconds')})"
            )
        elif earliest and request.point_in_time < earliest:
            problems.append(
                f"the restore point {request.point_in_time.isoformat()} is before the recovery "
                f"window ({earliest.isoformat()} .. {latest.isoformat() if latest else '?'})"
            )
        elif latest and request.point_in_time > latest:
            behind = request.point_in_time - latest
            if behind > CATCH_UP_LIMIT:
                problems.append(
                    f"the restore point {request.point_in_time.isoformat()} is after the latest "
                    f"recoverable time {latest.isoformat()}"
                )
            else:
                waiting_for = behind
        # A 403 for a destination that does not exist is confirmed by listing (see above).
        free = await self.admin.instance(project, request.destination) is None
        if not free:
            problems.append(
                f"an instance named {request.destination!r} already exists: choose another "
                "--new-instance"
            )
        if waiting_for is not None and not problems and latest is not None:
            delay = min(waiting_for + CATCH_UP_MARGIN, CATCH_UP_RECHECK)
            raise ApplicationError(
                f"the recovery window of {request.source} ends at {latest.isoformat()}, "
                f"{waiting_for.total_seconds():.0f}s before the restore point "
                f"{request.point_in_time.isoformat()}: Cloud SQL is still shipping its "
                f"transaction logs; looking again in {delay.total_seconds():.0f}s; retrying",
                type="RecoveryWindowBehind",
                next_retry_delay=delay,
            )
        if waiting_for is not None and latest is not None:
            problems.append(
                f"the restore point {request.point_in_time.isoformat()} is not recoverable yet "
                f"(the window ends at {latest.isoformat()} while the transaction logs are "
                "shipped)"
            )
        runs = await self.admin.backup_runs(project, request.source, max_results=10)
        return PitrCheck(
            pitr_enabled=enabled,
            source_connection_name=source.get("connectionName", ""),
            earliest=earliest,
            latest=latest,
            destination_free=free,
            backups=[backup_run_info(r) for r in runs],
            problems=problems,
        )

    @activity.defn(name=refs.START_CLONE.name)
    async def start_clone(self, request: CloneRequest) -> OperationRef:
        project = require_project(request.project, self.project, SETTING)
        if self.gatekeeper is not None:
            plan = request.grant.plan if request.grant else {}
            entry = self.gatekeeper.catalog.named(str(plan.get("service", "")))
            if entry is not None and (
                entry.pitr is None or entry.pitr.cloudsql_instance != request.source
            ):
                entry = None  # the service's catalog entry does not name this source
            facts = {
                "kind": "pitr-clone",
                "source": request.source,
                "clone": request.destination,
                "point_in_time": request.point_in_time.astimezone(dt.UTC).isoformat(),
            }
            self.gatekeeper.require(
                request.grant,
                entry,
                entry.pitr.approvals if entry and entry.pitr else 1,
                facts,
                f"clone {request.source}",
            )
        context = {
            "destinationInstanceName": request.destination,
            "pointInTime": rfc3339(request.point_in_time),
        }
        try:
            operation = await self.admin.clone(project, request.source, context)
        except Conflict:
            # A retry after the first attempt's reply was lost: find that clone's operation.
            for op in await self.admin.operations(project, request.destination):
                if op.get("operationType") == "CLONE" and op.get("targetId") == request.destination:
                    return OperationRef(project=project, name=op["name"])
            raise permanent(
                f"an instance named {request.destination!r} already exists and was not made by "
                "this recovery",
                "DestinationTaken",
            ) from None
        except NotFound as exc:
            raise permanent(
                f"Cloud SQL refused the clone of {request.source}: {exc.message}", "CloneRefused"
            ) from None
        except ApplicationError as exc:
            if exc.non_retryable:
                raise permanent(
                    f"Cloud SQL refused the clone of {request.source} to "
                    f"{request.point_in_time.isoformat()}: {exc.message}",
                    "CloneRefused",
                ) from None
            raise
        return OperationRef(project=project, name=operation["name"])

    @activity.defn(name=refs.OPERATION_DONE.name)
    async def operation_done(self, ref: OperationRef) -> str:
        """One look at the operation. Not done yet is a retryable failure, so the
        workflow's retry policy spaces the looks and the history stays small."""
        try:
            operation = await self.admin.operation(ref.project, ref.name)
        except NotFound as exc:
            raise permanent(
                f"operation {ref.name} does not exist in project {ref.project}: {exc.message}",
                "OperationFailed",
            ) from None
        status: str = operation.get("status", "SQL_OPERATION_STATUS_UNSPECIFIED")
        if status != "DONE":
            raise ApplicationError(f"operation {ref.name} is {status}", type="OperationRunning")
        failed = operation_error(operation)
        if failed:
            raise permanent(f"operation {ref.name} failed: {failed}", "OperationFailed")
        return status

    @activity.defn(name=refs.INSTANCE.name)
    async def instance(self, ref: InstanceRef) -> InstanceInfo:
        project = require_project(ref.project, self.project, SETTING)
        found = await self.admin.instance(project, ref.name)
        if found is None:
            raise permanent(
                f"Cloud SQL instance {ref.name!r} does not exist in project {project!r}",
                "CloudSqlNotFound",
            )
        addresses = {
            ip.get("type"): ip.get("ipAddress", "") for ip in found.get("ipAddresses") or []
        }
        # The proxy's --private-ip reaches PRIVATE; a public-IP set-up has only PRIMARY.
        host = addresses.get("PRIVATE") or addresses.get("PRIMARY") or ""
        return InstanceInfo(
            name=found["name"],
            host=host,
            port=5432,
            connection_name=found.get("connectionName", ""),
            state=found.get("state", ""),
        )
