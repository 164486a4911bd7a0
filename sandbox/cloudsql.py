"""A Cloud SQL Admin API emulator (gRPC `google.cloud.sql.v1`) whose
instances are real PostgreSQL clusters and whose backup runs are real
`pg_basebackup`s, so the official `google-cloud-sql` client talks to it as it
would to Google.

Served: SqlInstancesService Get/List/GetLatestRecoveryTime/Clone,
SqlBackupRunsService List/Get/Insert, SqlOperationsService Get/List. Errors
come back with the gRPC codes and messages of the real API (NOT_FOUND "The
Cloud SQL instance does not exist.", PERMISSION_DENIED for another project,
INVALID_ARGUMENT for a missing field).

Clone restores a real point in time (cloudsql_clone.py) into a new instance
on its own port: as DatabaseInstance has no port field, every instance shows
its port as the user label `sandbox-port` (and `Instance.app_env()` has it).

Everything lives under one data root, `<state_dir>/cloudsql/`:

    instances/<name>/                a PostgresCluster: data/, run/, wal-archive/, postgres.log
    instances/<name>/backups/<id>/   the plain base backup of backup run <id>
    instances/<name>/backups.jsonl   start/end LSN and times of each base backup
    instances/<clone>/               a clone: its data dir starts as a copy of a source backup

Running as root, the server runs as an unprivileged user that must reach the
root; if it cannot reach `state_dir` (pytest's tmp dirs are private to root)
or the path is too long for a Unix socket, the root is a fresh dir under /tmp
instead, and `<state_dir>/cloudsql-location.txt` names it. Nothing is deleted
on stop: the data dirs, WAL archives and backups stay for a user to inspect."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.cloud.sqladmin_v1 import types as sql

from .cloudsql_clone import (
    check_destination,
    check_in_window,
    recovery_window,
    requested_point,
    restore_clone,
)
from .cloudsql_resources import (
    INSTANCE_NAME,
    RUN_TYPES,
    ApiError,
    BackupRunRecord,
    Instance,
    OperationRecord,
    backup_run_message,
    instance_message,
    operation_message,
    utcnow,
)
from .postgres import _MAX_SOCKET_DIR, PostgresCluster, PostgresError, _blocked_dir, _server_user

__all__ = ["BackupRunRecord", "CloudSqlEmulator", "Instance", "OperationRecord"]

LOCATION_FILE = "cloudsql-location.txt"
SERVICE = "google.cloud.sql.v1.{}"
# Leave room for "/instances/<name of up to 30 characters>/run" in a socket path.
_MAX_ROOT = _MAX_SOCKET_DIR - len("/instances/") - 30 - len("/run")


def _page(items: Sequence[Any], max_results: int, page_token: str) -> tuple[list[Any], str]:
    try:
        start = int(page_token or 0)
    except ValueError:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid request: page token {page_token!r} is not valid.") from None
    end = start + max_results if max_results > 0 else len(items)
    return list(items[start:end]), str(end) if end < len(items) else ""


class CloudSqlEmulator:
    def __init__(self, state_dir: Path, project: str = "tekutoko-prod", region: str = "asia-northeast1") -> None:
        self.state_dir = Path(state_dir).absolute()
        self.project = project
        self.region = region
        self.port = 0
        self._root: Path | None = None
        self._instances: dict[str, Instance] = {}
        # Destinations of clones still being restored: no one else may take the name meanwhile.
        self._claimed: set[str] = set()
        self._operations: dict[str, tuple[Instance, OperationRecord]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: grpc.aio.Server | None = None
        self._last_run_id = 0

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        # Decide (and record) where the data goes before anything asks.
        if self._root is None:
            self._root = self._choose_root()
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(self._handlers())
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        """Let running backups and clones finish (briefly), stop serving, stop
        every cluster, clones included."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=30)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
        errors = []
        for instance in self._instances.values():
            try:
                await instance.cluster.stop()
            except PostgresError as exc:
                errors.append(f"{instance.name}: {exc}")
        if errors:
            raise PostgresError("could not stop every Cloud SQL instance: " + "; ".join(errors))

    @property
    def data_root(self) -> Path:
        if self._root is None:
            self._root = self._choose_root()
        return self._root

    def _choose_root(self) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        user = _server_user()

        def reachable(path: Path) -> bool:
            return user is None or _blocked_dir(path, user) is None

        preferred = self.state_dir / "cloudsql"
        note = self.state_dir / LOCATION_FILE
        previous = Path(note.read_text().strip()) if note.is_file() else None
        if reachable(self.state_dir) and len(str(preferred)) <= _MAX_ROOT:
            root = preferred
            root.mkdir(exist_ok=True)
            root.chmod(0o755)
        elif previous is not None and previous.is_dir() and reachable(previous) and len(str(previous)) <= _MAX_ROOT:
            root = previous  # a restart finds the data of the last run
        else:
            root = Path(tempfile.mkdtemp(prefix="modoru-cloudsql-", dir="/tmp"))
            root.chmod(0o755)
        note.write_text(f"{root}\n")
        return root

    # --- instances and backups ------------------------------------------------------

    def instance(self, name: str) -> Instance:
        return self._instances[name]

    @property
    def instances(self) -> list[Instance]:
        return list(self._instances.values())

    async def add_instance(self, name: str, *, database: str, user: str, password: str, pitr: bool = True, initial_backup: bool = True) -> Instance:
        """A running instance with `database` owned by the login role `user`;
        with `initial_backup`, one SUCCESSFUL automated backup run as well."""
        if not INSTANCE_NAME.match(name):
            raise ValueError(f"instance name {name!r} is not a valid Cloud SQL instance ID (lowercase letters, digits and hyphens, starting with a letter)")
        if name in self._instances or name in self._claimed:
            raise ValueError(f"instance {name!r} already exists")
        cluster = PostgresCluster(self.data_root / "instances" / name)
        instance = Instance(name=name, cluster=cluster, database=database, user=user, password=password,
                            project=self.project, region=self.region, pitr_enabled=pitr)
        op = self._new_operation(instance, "CREATE")
        op.begin()
        try:
            await cluster.start()
            await cluster.create_role(user, password)
            await cluster.create_database(database, owner=user)
            version = (await cluster.execute("SHOW server_version"))[0][0].split()[0]
        except BaseException:
            self._operations.pop(op.name, None)
            with contextlib.suppress(PostgresError):
                await cluster.stop()
            raise
        instance.database_version = f"POSTGRES_{version.split('.')[0]}"
        instance.installed_version = f"POSTGRES_{version.replace('.', '_')}"
        self._instances[name] = instance
        op.finish()
        if initial_backup:
            await self.take_backup(name, kind="AUTOMATED")
        return instance

    async def take_backup(self, name: str, *, kind: str = "AUTOMATED", description: str = "") -> BackupRunRecord:
        """Run a backup to the end; raises PostgresError if it FAILED (the run
        stays listed, FAILED, as on Cloud SQL)."""
        instance = self.instance(name)
        run, op = self._enqueue_backup(instance, kind, description)
        await self._run_operation(op, lambda: self._back_up(instance, run))
        if run.status != "SUCCESSFUL":
            raise PostgresError(f"backup run {run.id} of instance {name} failed: {run.error}")
        return run

    async def wait_operation(self, name: str, *, timeout: float = 120) -> OperationRecord:
        """The operation's record once it is DONE (its `error` says whether it
        failed); KeyError for an unknown name, TimeoutError if still running."""
        _, op = self._operations[name]
        deadline = time.monotonic() + timeout
        while op.status != "DONE":
            if time.monotonic() > deadline:
                raise TimeoutError(f"operation {name} ({op.operation_type} of {op.instance}) is still {op.status} after {timeout:.0f}s")
            await asyncio.sleep(0.05)
        return op

    def _new_operation(self, instance: Instance, operation_type: str, backup_run_id: int | None = None) -> OperationRecord:
        op = OperationRecord(name=str(uuid.uuid4()), operation_type=operation_type, instance=instance.name,
                             insert_time=utcnow(), backup_run_id=backup_run_id)
        instance.operations.append(op)
        self._operations[op.name] = (instance, op)
        return op

    def _enqueue_backup(self, instance: Instance, kind: str, description: str) -> tuple[BackupRunRecord, OperationRecord]:
        if kind not in RUN_TYPES:
            raise ValueError(f"backup kind must be one of {', '.join(RUN_TYPES)}, not {kind!r}")
        # Real run IDs are the enqueue time in epoch milliseconds.
        run_id = self._last_run_id = max(self._last_run_id + 1, int(time.time() * 1000))
        run = BackupRunRecord(id=run_id, instance=instance.name, type=kind, path=instance.backups_dir / str(run_id),
                              enqueued_time=utcnow(), description=description)
        instance.backup_runs.append(run)
        return run, self._new_operation(instance, "BACKUP_VOLUME", backup_run_id=run_id)

    async def _back_up(self, instance: Instance, run: BackupRunRecord) -> None:
        async with instance.backup_lock:
            run.status, run.start_time = "RUNNING", utcnow()
            try:
                run.backup = await instance.cluster.base_backup(run.path, label=f"Cloud SQL backup run {run.id}")
            except BaseException as exc:
                message = str(exc) if isinstance(exc, PostgresError | OSError) else "the backup was interrupted (the emulator stopped)"
                run.status, run.end_time, run.error = "FAILED", utcnow(), message
                raise
            run.status, run.end_time = "SUCCESSFUL", utcnow()

    async def _run_operation(self, op: OperationRecord, work: Callable[[], Awaitable[None]]) -> None:
        op.begin()
        try:
            await work()
        except (PostgresError, OSError) as exc:
            op.finish(("INTERNAL_ERROR", str(exc)))
        except asyncio.CancelledError:
            op.finish(("INTERNAL_ERROR", "the operation was interrupted (the emulator stopped)"))
            raise
        else:
            op.finish()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- request checks -------------------------------------------------------------

    def _check_project(self, project: str) -> None:
        if not project:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "Missing required parameter: project.")
        if project != self.project:
            raise ApiError(grpc.StatusCode.PERMISSION_DENIED, "The client is not authorized to make this request.")

    def _find_instance(self, project: str, name: str) -> Instance:
        self._check_project(project)
        if not name:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "Missing required parameter: instance.")
        try:
            return self._instances[name]
        except KeyError:
            raise ApiError(grpc.StatusCode.NOT_FOUND, "The Cloud SQL instance does not exist.") from None

    # --- RPCs -----------------------------------------------------------------------

    def _handlers(self) -> list[grpc.GenericRpcHandler]:
        services = {
            "SqlInstancesService": {
                "Get": (self.get_instance, sql.SqlInstancesGetRequest, sql.DatabaseInstance),
                "List": (self.list_instances, sql.SqlInstancesListRequest, sql.InstancesListResponse),
                "GetLatestRecoveryTime": (self.get_latest_recovery_time, sql.SqlInstancesGetLatestRecoveryTimeRequest,
                                          sql.SqlInstancesGetLatestRecoveryTimeResponse),
                "Clone": (self.clone_instance, sql.SqlInstancesCloneRequest, sql.Operation),
            },
            "SqlBackupRunsService": {
                "Get": (self.get_backup_run, sql.SqlBackupRunsGetRequest, sql.BackupRun),
                "List": (self.list_backup_runs, sql.SqlBackupRunsListRequest, sql.BackupRunsListResponse),
                "Insert": (self.insert_backup_run, sql.SqlBackupRunsInsertRequest, sql.Operation),
            },
            "SqlOperationsService": {
                "Get": (self.get_operation, sql.SqlOperationsGetRequest, sql.Operation),
                "List": (self.list_operations, sql.SqlOperationsListRequest, sql.OperationsListResponse),
            },
        }
        return [
            grpc.method_handlers_generic_handler(SERVICE.format(service), {
                method: self._unary(*spec) for method, spec in methods.items()
            })
            for service, methods in services.items()
        ]

    @staticmethod
    def _unary(method: Callable[[Any], Any], request_type: Any, response_type: Any) -> grpc.RpcMethodHandler:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                response = method(request)
                return await response if inspect.isawaitable(response) else response
            except ApiError as exc:
                await context.abort(exc.code, exc.message)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=request_type.deserialize, response_serializer=response_type.serialize,
        )

    def get_instance(self, request: sql.SqlInstancesGetRequest) -> sql.DatabaseInstance:
        return instance_message(self._find_instance(request.project, request.instance))

    def list_instances(self, request: sql.SqlInstancesListRequest) -> sql.InstancesListResponse:
        self._check_project(request.project)
        if request.filter:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid request: the emulator does not support filters ({request.filter!r}); list all and filter locally.")
        items, token = _page(sorted(self._instances.values(), key=lambda i: i.name), request.max_results, request.page_token)
        return sql.InstancesListResponse(kind="sql#instancesList", items=[instance_message(i) for i in items], next_page_token=token)

    async def get_latest_recovery_time(self, request: sql.SqlInstancesGetLatestRecoveryTimeRequest) -> sql.SqlInstancesGetLatestRecoveryTimeResponse:
        earliest, latest = await recovery_window(self._find_instance(request.project, request.instance))
        return sql.SqlInstancesGetLatestRecoveryTimeResponse(kind="sql#getLatestRecoveryTime", latest_recovery_time=latest, earliest_recovery_time=earliest)

    async def clone_instance(self, request: sql.SqlInstancesCloneRequest) -> sql.Operation:
        """A point-in-time clone: checked at once (nothing is created for a bad
        request), answered with a PENDING CLONE operation targeting the new
        instance, restored in the background."""
        source = self._find_instance(request.project, request.instance)
        context = request.body.clone_context
        name = context.destination_instance_name
        check_destination(name, name in self._instances or name in self._claimed, self.data_root / "instances")
        self._claimed.add(name)
        try:
            point = requested_point(context, self.project)
            check_in_window(source, point, *await recovery_window(source))
        except BaseException:
            self._claimed.discard(name)
            raise
        op = self._new_operation(source, "CLONE")
        op.instance = name
        message = operation_message(source, op)
        self._spawn(self._run_operation(op, lambda: self._restore_clone(source, op, point)))
        return message

    async def _restore_clone(self, source: Instance, op: OperationRecord, point: datetime) -> None:
        try:
            clone = await restore_clone(source, op.instance, point, self.data_root / "instances" / op.instance)
            clone.operations.append(op)
            self._instances[clone.name] = clone
        finally:
            self._claimed.discard(op.instance)

    def get_backup_run(self, request: sql.SqlBackupRunsGetRequest) -> sql.BackupRun:
        instance = self._find_instance(request.project, request.instance)
        if not request.id:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "Missing required parameter: id.")
        try:
            return backup_run_message(instance, instance.backup_run(request.id))
        except KeyError:
            raise ApiError(grpc.StatusCode.NOT_FOUND, "The backup run does not exist.") from None

    def list_backup_runs(self, request: sql.SqlBackupRunsListRequest) -> sql.BackupRunsListResponse:
        # "-" lists the runs of every instance in the project, as on the real API.
        if request.instance == "-":
            self._check_project(request.project)
            runs = sorted(((i, r) for i in self._instances.values() for r in i.backup_runs),
                          key=lambda pair: (pair[1].enqueued_time, pair[1].id), reverse=True)
        else:
            instance = self._find_instance(request.project, request.instance)
            runs = [(instance, run) for run in instance.runs_newest_first()]
        items, token = _page(runs, request.max_results, request.page_token)
        return sql.BackupRunsListResponse(kind="sql#backupRunsList", items=[backup_run_message(i, r) for i, r in items], next_page_token=token)

    def insert_backup_run(self, request: sql.SqlBackupRunsInsertRequest) -> sql.Operation:
        """An on-demand backup: answered at once with a PENDING operation, run in the background."""
        instance = self._find_instance(request.project, request.instance)
        run, op = self._enqueue_backup(instance, "ON_DEMAND", request.body.description)
        message = operation_message(instance, op)
        self._spawn(self._run_operation(op, lambda: self._back_up(instance, run)))
        return message

    def get_operation(self, request: sql.SqlOperationsGetRequest) -> sql.Operation:
        self._check_project(request.project)
        if not request.operation:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "Missing required parameter: operation.")
        found = self._operations.get(request.operation)
        if found is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, "The Cloud SQL operation does not exist.")
        return operation_message(*found)

    def list_operations(self, request: sql.SqlOperationsListRequest) -> sql.OperationsListResponse:
        """Newest first; without an instance, every operation in the project."""
        if request.instance:
            # A clone's operation is listed under the new name while it runs, and after it failed too.
            ops = [pair for pair in self._operations.values() if pair[1].instance == request.instance]
            if request.instance in self._instances or not ops:
                instance = self._find_instance(request.project, request.instance)
                ops = [(instance, op) for op in instance.operations]
            self._check_project(request.project)
        else:
            self._check_project(request.project)
            ops = list(self._operations.values())
        # Reversed first, so that operations inserted in the same microsecond still list newest first.
        ops.reverse()
        ops.sort(key=lambda pair: pair[1].insert_time, reverse=True)
        items, token = _page(ops, request.max_results, request.page_token)
        return sql.OperationsListResponse(kind="sql#operationsList", items=[operation_message(i, op) for i, op in items], next_page_token=token)
