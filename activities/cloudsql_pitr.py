"""Point-in-time recovery through the Cloud SQL Admin API (official client):
the recovery window and pre-checks, the clone, its operation (checked in the
infrequent-polling way: one look per attempt, Temporal's retries space them),
and the clone's address. The source instance is only ever read."""

from __future__ import annotations

import datetime as dt

from google.api_core import exceptions
from google.cloud import sqladmin_v1 as sql
from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook.pitr_models import (
    CloneRequest,
    InstanceInfo,
    InstanceRef,
    OperationRef,
    PitrCheck,
    PitrCheckRequest,
)

from .cloudsql import backup_run_info, proto_time
from .errors import permanent

PORT_LABEL = "sandbox-port"  # the sandbox's instances listen on their own ports; Cloud SQL's on 5432


class PitrActivities:
    def __init__(self, instances: sql.SqlInstancesServiceAsyncClient, backup_runs: sql.SqlBackupRunsServiceAsyncClient,
                 operations: sql.SqlOperationsServiceAsyncClient, project: str | None) -> None:
        self.instances = instances
        self.backup_runs = backup_runs
        self.operations = operations
        self.project = project

    def _project(self, given: str | None) -> str:
        project = given or self.project
        if not project:
            raise permanent("no Cloud SQL project: set the catalog's pitr.cloudsql_project or MODORU_CLOUDSQL_PROJECT", "CloudSqlNotConfigured")
        return project

    async def _get(self, project: str, name: str) -> sql.DatabaseInstance | None:
        try:
            return await self.instances.get(request=sql.SqlInstancesGetRequest(project=project, instance=name))
        except exceptions.NotFound:
            return None
        except (exceptions.PermissionDenied, exceptions.Unauthenticated) as exc:
            raise permanent(f"Cloud SQL Admin refused reading instance {name} ({exc.message}): the worker needs roles/cloudsql.viewer", "CloudSqlDenied") from None

    @activity.defn(name="cloudsql.pitr_check")
    async def pitr_check(self, request: PitrCheckRequest) -> PitrCheck:
        """Everything that must hold before a clone is created; problems are listed, not raised."""
        project = self._project(request.project)
        source = await self._get(project, request.source)
        if source is None:
            return PitrCheck(pitr_enabled=False, destination_free=False, problems=[f"Cloud SQL instance {request.source!r} does not exist in project {project!r}"])
        problems: list[str] = []
        enabled = bool(source.settings.backup_configuration.point_in_time_recovery_enabled)
        earliest = latest = None
        if not enabled:
            problems.append(f"point-in-time recovery is not enabled on {request.source}: enable it (gcloud sql instances patch {request.source} --enable-point-in-time-recovery); it only covers time after that")
        else:
            try:
                window = await self.instances.get_latest_recovery_time(request=sql.SqlInstancesGetLatestRecoveryTimeRequest(project=project, instance=request.source))
                earliest, latest = proto_time(window.earliest_recovery_time), proto_time(window.latest_recovery_time)
            except exceptions.GoogleAPICallError as exc:
                problems.append(f"cannot read the recovery window of {request.source}: {exc.message}")
        now = dt.datetime.now(dt.UTC)
        if request.point_in_time > now:
            problems.append(f"the restore point {request.point_in_time.isoformat()} is in the future (now {now.isoformat(timespec='seconds')})")
        elif earliest and request.point_in_time < earliest:
            problems.append(f"the restore point {request.point_in_time.isoformat()} is before the recovery window ({earliest.isoformat()} .. {latest.isoformat() if latest else '?'})")
        elif latest and request.point_in_time > latest:
            problems.append(f"the restore point {request.point_in_time.isoformat()} is after the latest recoverable time {latest.isoformat()}")
        free = await self._get(project, request.destination) is None
        if not free:
            problems.append(f"an instance named {request.destination!r} already exists: choose another --new-instance")
        runs = await self.backup_runs.list(request=sql.SqlBackupRunsListRequest(project=project, instance=request.source, max_results=10))
        return PitrCheck(pitr_enabled=enabled, earliest=earliest, latest=latest, destination_free=free, backups=[backup_run_info(r) for r in runs.items], problems=problems)

    @activity.defn(name="cloudsql.start_clone")
    async def start_clone(self, request: CloneRequest) -> OperationRef:
        project = self._project(request.project)
        body = sql.InstancesCloneRequest(clone_context=sql.CloneContext(destination_instance_name=request.destination, point_in_time=request.point_in_time))
        try:
            operation = await self.instances.clone(request=sql.SqlInstancesCloneRequest(project=project, instance=request.source, body=body))
        except exceptions.Conflict:
            # A retry after the first attempt's reply was lost: find that clone's operation.
            found = await self.operations.list(request=sql.SqlOperationsListRequest(project=project, instance=request.destination))
            for op in found.items:
                if op.operation_type == sql.Operation.SqlOperationType.CLONE or op.target_id == request.destination:
                    return OperationRef(project=project, name=op.name)
            raise permanent(f"an instance named {request.destination!r} already exists and was not made by this recovery", "DestinationTaken") from None
        except (exceptions.InvalidArgument, exceptions.FailedPrecondition, exceptions.NotFound) as exc:
            raise permanent(f"Cloud SQL refused the clone of {request.source} to {request.point_in_time.isoformat()}: {exc.message}", "CloneRefused") from None
        return OperationRef(project=project, name=operation.name)

    @activity.defn(name="cloudsql.operation_done")
    async def operation_done(self, ref: OperationRef) -> str:
        """One look at the operation. Not done yet is a retryable failure, so the
        workflow's retry policy spaces the looks and the history stays small."""
        operation = await self.operations.get(request=sql.SqlOperationsGetRequest(project=ref.project, operation=ref.name))
        status = sql.Operation.SqlOperationStatus(operation.status).name
        if operation.status != sql.Operation.SqlOperationStatus.DONE:
            raise ApplicationError(f"operation {ref.name} is {status}", type="OperationRunning")
        if operation.error and operation.error.errors:
            first = operation.error.errors[0]
            raise permanent(f"operation {ref.name} failed: {first.code}: {first.message}", "OperationFailed")
        return status

    @activity.defn(name="cloudsql.instance")
    async def instance(self, ref: InstanceRef) -> InstanceInfo:
        project = self._project(ref.project)
        found = await self._get(project, ref.name)
        if found is None:
            raise permanent(f"Cloud SQL instance {ref.name!r} does not exist in project {project!r}", "CloudSqlNotFound")
        primary = next((ip.ip_address for ip in found.ip_addresses if ip.type_ == sql.SqlIpAddressType.PRIMARY), "")
        port = int(found.settings.user_labels.get(PORT_LABEL, "5432"))
        return InstanceInfo(name=found.name, host=primary, port=port, connection_name=found.connection_name,
                            state=sql.DatabaseInstance.SqlInstanceState(found.state).name)
