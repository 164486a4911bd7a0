"""A Cloud SQL Admin API emulator speaking the REST API v1 exactly as the
`sqladmin.v1.json` discovery document describes it (routes, parameters,
bodies; sandbox/cloudsql_rest.py serves it), whose instances are real
PostgreSQL clusters and whose backup runs are real `pg_basebackup`s, so the
discovery-based `google-api-python-client` talks to it as it would to Google.

Served: instances.get/list/clone, projects.instances.getLatestRecoveryTime,
backupRuns.get/list/insert, operations.get/list. Errors come back in Google's
JSON shape with the real API's statuses and messages (404 "The Cloud SQL
instance does not exist.", 403 for another project, 409 for a clone into a
name that exists, 400 for an unknown field or a missing one). `instances.list`
takes the API's `field:value` filter terms (`name:tekutoko-db`).

Two behaviours of the real API are knobs (`GET`/`PUT /sandbox/behaviour`, or the
constructor): `missing_instance_status` 403 answers a request naming an
instance that does not exist with 403 "The caller does not have permission", as
Cloud SQL does in some projects (googleapis/google-api-go-client#1815), instead
of 404; `recovery_lag_seconds` makes `getLatestRecoveryTime` (and the clone's
window check) trail the request by that long, as a real instance's latest
recovery time trails the present while its transaction logs are shipped. Google
publishes no figure for that lag: `ASSUMED_RECOVERY_LAG_SECONDS` (300 s, the
5-minute WAL archive timeout common in managed PostgreSQL) is our assumption for
rehearsing production; the default is 0 so a test can clone to a moment just
past.

Clone restores a real point in time (cloudsql_clone.py) into a new instance
on its own port. The API has no port: instances report their PRIVATE address
only, and pods reach them through the Auth Proxy sidecar the sandbox models
(by connection name, `project:region:instance`); `address_of` answers that.

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
import re
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

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
    backup_run_resource,
    instance_resource,
    operation_resource,
    rfc3339,
    utcnow,
)
from .cloudsql_rest import build_app
from .kube.faults import EffectLog, FaultInjector, RequestLog
from .postgres import _MAX_SOCKET_DIR, PostgresCluster, PostgresError, _blocked_dir, _server_user

__all__ = ["BackupRunRecord", "CloudSqlEmulator", "Instance", "OperationRecord"]

LOCATION_FILE = "cloudsql-location.txt"
ASSUMED_RECOVERY_LAG_SECONDS = 300.0  # an assumption, not a Google figure (see above)
FILTER_TERM = re.compile(r"^([A-Za-z][A-Za-z0-9_.]*):(.+)$")
# Leave room for "/instances/<name of up to 30 characters>/run" in a socket path.
_MAX_ROOT = _MAX_SOCKET_DIR - len("/instances/") - 30 - len("/run")


def _page(items: Sequence[Any], query: dict[str, str]) -> tuple[list[Any], str | None]:
    page_token, max_results = query.get("pageToken", ""), int(query.get("maxResults") or 0)
    try:
        start = int(page_token or 0)
    except ValueError:
        raise ApiError(400, f"Invalid request: page token {page_token!r} is not valid.") from None
    end = start + max_results if max_results > 0 else len(items)
    return list(items[start:end]), str(end) if end < len(items) else None


class CloudSqlEmulator:
    def __init__(
        self,
        state_dir: Path,
        project: str = "tekutoko-prod",
        region: str = "asia-northeast1",
        seed: int | None = None,
        *,
        missing_instance_status: int = 404,
        recovery_lag_seconds: float = 0.0,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.faults = FaultInjector(
            seed=seed
        )  # PUT /sandbox/faults on the REST port (cloudsql_rest.py)
        self.requests = RequestLog()
        self.effects = EffectLog()
        self.project = project
        self.region = region
        self.port = 0
        self._root: Path | None = None
        self._instances: dict[str, Instance] = {}
        # Destinations of clones still being restored: no one else may take the name meanwhile.
        self._claimed: set[str] = set()
        self._operations: dict[str, tuple[Instance, OperationRecord]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._last_run_id = 0
        self.missing_instance_status = 404
        self.recovery_lag = timedelta(0)
        self.set_behaviour(
            missing_instance_status=missing_instance_status,
            recovery_lag_seconds=recovery_lag_seconds,
        )

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        # Decide (and record) where the data goes before anything asks.
        if self._root is None:
            self._root = self._choose_root()
        app = build_app(self)
        app.router.add_get("/sandbox/behaviour", self._get_behaviour)
        app.router.add_put("/sandbox/behaviour", self._put_behaviour)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        """The REST API's base URL (the discovery client's api_endpoint)."""
        return f"http://127.0.0.1:{self.port}/"

    def address_of(self, connection_name: str) -> tuple[str, int] | None:
        """Where the instance named `project:region:instance` really listens, if it exists and
        runs."""
        for instance in self._instances.values():
            if instance.connection_name == connection_name and instance.cluster.running:
                return instance.cluster.host, instance.cluster.port
        return None

    async def stop(self) -> None:
        """Let running backups and clones finish (briefly), stop serving, stop
        every cluster, clones included."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=30)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
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
        elif (
            previous is not None
            and previous.is_dir()
            and reachable(previous)
            and len(str(previous)) <= _MAX_ROOT
        ):
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

    async def add_instance(
        self,
        name: str,
        *,
        database: str,
        user: str,
        password: str,
        pitr: bool = True,
        initial_backup: bool = True,
    ) -> Instance:
        """A running instance with `database` owned by the login role `user`;
        with `initial_backup`, one SUCCESSFUL automated backup run as well."""
        if not INSTANCE_NAME.match(name):
            raise ValueError(
                f"instance name {name!r} is not a valid Cloud SQL instance ID (lowercase letters, "
                "digits and hyphens, starting with a letter)"
            )
        if name in self._instances or name in self._claimed:
            raise ValueError(f"instance {name!r} already exists")
        cluster = PostgresCluster(self.data_root / "instances" / name)
        instance = Instance(
            name=name,
            cluster=cluster,
            database=database,
            user=user,
            password=password,
            project=self.project,
            region=self.region,
            pitr_enabled=pitr,
        )
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

    async def take_backup(
        self, name: str, *, kind: str = "AUTOMATED", description: str = ""
    ) -> BackupRunRecord:
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
                raise TimeoutError(
                    f"operation {name} ({op.operation_type} of {op.instance}) is still "
                    f"{op.status} after {timeout:.0f}s"
                )
            await asyncio.sleep(0.05)
        return op

    def _new_operation(
        self, instance: Instance, operation_type: str, backup_run_id: int | None = None
    ) -> OperationRecord:
        op = OperationRecord(
            name=str(uuid.uuid4()),
            operation_type=operation_type,
            instance=instance.name,
            insert_time=utcnow(),
            backup_run_id=backup_run_id,
        )
        instance.operations.append(op)
        self._operations[op.name] = (instance, op)
        return op

    def _enqueue_backup(
        self, instance: Instance, kind: str, description: str
    ) -> tuple[BackupRunRecord, OperationRecord]:
        if kind not in RUN_TYPES:
            raise ValueError(f"backup kind must be one of {', '.join(RUN_TYPES)}, not {kind!r}")
        # Real run IDs are the enqueue time in epoch milliseconds.
        run_id = self._last_run_id = max(self._last_run_id + 1, int(time.time() * 1000))
        run = BackupRunRecord(
            id=run_id,
            instance=instance.name,
            type=kind,
            path=instance.backups_dir / str(run_id),
            enqueued_time=utcnow(),
            description=description,
        )
        instance.backup_runs.append(run)
        return run, self._new_operation(instance, "BACKUP_VOLUME", backup_run_id=run_id)

    async def _back_up(self, instance: Instance, run: BackupRunRecord) -> None:
        async with instance.backup_lock:
            run.status, run.start_time = "RUNNING", utcnow()
            try:
                run.backup = await instance.cluster.base_backup(
                    run.path, label=f"Cloud SQL backup run {run.id}"
                )
            except BaseException as exc:
                message = (
                    str(exc)
                    if isinstance(exc, PostgresError | OSError)
                    else "the backup was interrupted (the emulator stopped)"
                )
                run.status, run.end_time, run.error = "FAILED", utcnow(), message
                raise
            run.status, run.end_time = "SUCCESSFUL", utcnow()

    async def _run_operation(
        self, op: OperationRecord, work: Callable[[], Awaitable[None]]
    ) -> None:
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

    # --- behaviour knobs --------------------------------------------------------------

    def behaviour(self) -> dict[str, Any]:
        return {
            "missing_instance_status": self.missing_instance_status,
            "recovery_lag_seconds": self.recovery_lag.total_seconds(),
        }

    def set_behaviour(
        self,
        *,
        missing_instance_status: int | None = None,
        recovery_lag_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Change what the knobs given say (ValueError for a value the API would not show)."""
        if missing_instance_status is not None:
            if missing_instance_status not in (403, 404):
                raise ValueError("missing_instance_status is 404 (the documented answer) or 403")
            self.missing_instance_status = missing_instance_status
        if recovery_lag_seconds is not None:
            if not 0 <= recovery_lag_seconds <= 86_400:
                raise ValueError("recovery_lag_seconds is from 0 to 86400")
            self.recovery_lag = timedelta(seconds=recovery_lag_seconds)
        return self.behaviour()

    async def _get_behaviour(self, request: web.Request) -> web.Response:
        return web.json_response(self.behaviour())

    async def _put_behaviour(self, request: web.Request) -> web.Response:
        """`{"missing_instance_status": 403, "recovery_lag_seconds": 300}`; either may be left
        out."""
        try:
            body = await request.json()
            if not isinstance(body, dict) or set(body) - set(self.behaviour()):
                raise ValueError(f"known knobs: {', '.join(self.behaviour())}")
            return web.json_response(self.set_behaviour(**body))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def _window(self, instance: Instance) -> tuple[datetime, datetime]:
        """The recovery window as the API reports it: its end trails the archive by the lag
        (never before its start)."""
        earliest, latest = await recovery_window(instance)
        return earliest, max(earliest, latest - self.recovery_lag)

    # --- request checks -------------------------------------------------------------

    def _check_project(self, project: str) -> None:
        if project != self.project:
            raise ApiError(
                403, "The client is not authorized to make this request.", reason="notAuthorized"
            )

    def _find_instance(self, project: str, name: str) -> Instance:
        self._check_project(project)
        try:
            return self._instances[name]
        except KeyError:
            if self.missing_instance_status == 403:
                raise ApiError(
                    403,
                    "The caller does not have permission",
                    reason="forbidden",
                    status="PERMISSION_DENIED",
                ) from None
            raise ApiError(
                404, "The Cloud SQL instance does not exist.", reason="instanceDoesNotExist"
            ) from None

    # --- the API's methods (sandbox/cloudsql_rest.py routes requests here) ------------

    def get_instance(self, project: str, instance: str) -> dict[str, Any]:
        return instance_resource(self._find_instance(project, instance))

    def list_instances(self, project: str, query: dict[str, str]) -> dict[str, Any]:
        self._check_project(project)
        terms = _filter_terms(query.get("filter", ""))
        resources = [
            resource
            for resource in (
                instance_resource(i) for i in sorted(self._instances.values(), key=lambda i: i.name)
            )
            if all(_field(resource, path) == value for path, value in terms)
        ]
        items, token = _page(resources, query)
        return _listing("sql#instancesList", items, token)

    async def get_latest_recovery_time(self, project: str, instance: str) -> dict[str, Any]:
        earliest, latest = await self._window(self._find_instance(project, instance))
        return {
            "kind": "sql#getLatestRecoveryTime",
            "latestRecoveryTime": rfc3339(latest),
            "earliestRecoveryTime": rfc3339(earliest),
        }

    async def clone_instance(
        self, project: str, instance: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A point-in-time clone: checked at once (nothing is created for a bad
        request), answered with a PENDING CLONE operation targeting the new
        instance, restored in the background."""
        source = self._find_instance(project, instance)
        if "cloneContext" not in body:
            raise ApiError(400, "Invalid request: cloneContext is required.")
        context = body["cloneContext"]
        name = context.get("destinationInstanceName", "")
        check_destination(
            name, name in self._instances or name in self._claimed, self.data_root / "instances"
        )
        self._claimed.add(name)
        try:
            point = requested_point(context, self.project)
            check_in_window(source, point, *await self._window(source))
        except BaseException:
            self._claimed.discard(name)
            raise
        op = self._new_operation(source, "CLONE")
        op.instance = name
        resource = operation_resource(source, op)
        self._spawn(self._run_operation(op, lambda: self._restore_clone(source, op, point)))
        return resource

    async def _restore_clone(self, source: Instance, op: OperationRecord, point: datetime) -> None:
        try:
            clone = await restore_clone(
                source, op.instance, point, self.data_root / "instances" / op.instance
            )
            clone.operations.append(op)
            self._instances[clone.name] = clone
        finally:
            self._claimed.discard(op.instance)

    def get_backup_run(self, project: str, instance: str, id: str) -> dict[str, Any]:
        found = self._find_instance(project, instance)
        try:
            return backup_run_resource(found, found.backup_run(int(id)))
        except (KeyError, ValueError):
            raise ApiError(
                404, "The backup run does not exist.", reason="backupRunDoesNotExist"
            ) from None

    def list_backup_runs(
        self, project: str, instance: str, query: dict[str, str]
    ) -> dict[str, Any]:
        # "-" lists the runs of every instance in the project, as on the real API.
        if instance == "-":
            self._check_project(project)
            runs = sorted(
                ((i, r) for i in self._instances.values() for r in i.backup_runs),
                key=lambda pair: (pair[1].enqueued_time, pair[1].id),
                reverse=True,
            )
        else:
            found = self._find_instance(project, instance)
            runs = [(found, run) for run in found.runs_newest_first()]
        items, token = _page(runs, query)
        return _listing("sql#backupRunsList", [backup_run_resource(i, r) for i, r in items], token)

    def insert_backup_run(
        self, project: str, instance: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """An on-demand backup: answered at once with a PENDING operation, run in the background."""
        found = self._find_instance(project, instance)
        run, op = self._enqueue_backup(found, "ON_DEMAND", body.get("description", ""))
        resource = operation_resource(found, op)
        self._spawn(self._run_operation(op, lambda: self._back_up(found, run)))
        return resource

    def get_operation(self, project: str, operation: str) -> dict[str, Any]:
        self._check_project(project)
        found = self._operations.get(operation)
        if found is None:
            raise ApiError(
                404, "The Cloud SQL operation does not exist.", reason="operationDoesNotExist"
            )
        return operation_resource(*found)

    def list_operations(self, project: str, query: dict[str, str]) -> dict[str, Any]:
        """Newest first; without an instance, every operation in the project."""
        self._check_project(project)
        name = query.get("instance", "")
        if name:
            # A clone's operation is listed under the new name while it runs, and after it failed
            # too.
            ops = [pair for pair in self._operations.values() if pair[1].instance == name]
            if name in self._instances or not ops:
                found = self._find_instance(project, name)
                ops = [(found, op) for op in found.operations]
        else:
            ops = list(self._operations.values())
        # Reversed first, so that operations inserted in the same microsecond still list newest
        # first.
        ops.reverse()
        ops.sort(key=lambda pair: pair[1].insert_time, reverse=True)
        items, token = _page(ops, query)
        return _listing("sql#operationsList", [operation_resource(i, op) for i, op in items], token)


def _filter_terms(expression: str) -> list[tuple[str, str]]:
    """`field:value` terms, space-separated (an explicit AND between them is allowed), as the
    discovery document describes `instances.list`'s filter; the rest of Google's filter
    grammar (OR, parentheses, comparisons) is refused rather than misread."""
    terms = []
    for word in expression.split():
        if word == "AND":
            continue
        match = FILTER_TERM.match(word)
        if match is None or word == "OR" or word.startswith(("(", "-", "NOT")):
            raise ApiError(
                400,
                f"Invalid request: the emulator understands only 'field:value' filter terms "
                f"(got {expression!r}).",
            )
        path, value = match.groups()
        terms.append((path, value.strip('"')))
    return terms


def _field(resource: dict[str, Any], path: str) -> str | None:
    """The value at a dotted path of a resource, as a filter compares it (booleans lower case)."""
    value: Any = resource
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):
        return str(value).lower()
    return None if isinstance(value, dict | list) else str(value)


def _listing(kind: str, items: list[dict[str, Any]], token: str | None) -> dict[str, Any]:
    # An empty page has no "items" on the real API; the client reads a missing list as none.
    return {
        "kind": kind,
        **({"items": items} if items else {}),
        **({"nextPageToken": token} if token else {}),
    }
