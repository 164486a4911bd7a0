"""Read-only looks at a service's database the runbook's way: `psql -h localhost`
inside an app pod, whose Cloud SQL Auth Proxy sidecar names the instance. The
worker never connects to the database and never holds its credentials.

Every query is one SELECT, run in a READ ONLY transaction with a statement
timeout and rolled back. Verifying a point-in-time clone uses a short-lived pod
made from the app's pod template whose proxy names the clone; that pod carries
no app labels (no Service or ReplicaSet picks it up) and is removed afterwards."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
from typing import Any

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import activity_refs as refs
from runbook.catalog import DatabaseAccess
from runbook.migration_models import DatabaseSnapshot, SnapshotRequest
from runbook.models import CheckResult
from runbook.pitr_models import CloneQueriesRequest
from runbook.queries import one_reading_statement

from .errors import permanent, raise_for_api_error
from .heartbeat import Heartbeat, PodProgress
from .pod_exec import PodExecActivities
from .proxy import proxy_container, retarget

TABLES = (
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
    "AND table_type = 'BASE TABLE' ORDER BY 1"
)
_MISSING_RELATION = re.compile(r'relation "[^"]+" does not exist')
_QUOTED = re.compile(r""""[^"]*"|'[^']*'""")
CHECK_POD_LABEL = "modoru.dev/pitr-check"


class QueryFailed(Exception):
    def __init__(self, stderr: str) -> None:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        error = next((line for line in lines if line.startswith("ERROR")), "")
        # psql's error with anything it quotes taken out: a message can quote a value from the
        # rows ('invalid input syntax for type integer: "alice@example.com"').
        self.kind = _QUOTED.sub('"…"', error)[:300] if error else "psql failed"
        super().__init__(
            next(
                (line for line in lines if line.startswith("ERROR")),
                lines[-1] if lines else "psql failed",
            )
        )


def one_select(sql: str, what: str) -> str:
    """`sql` as one reading statement, or a permanent failure naming `what` (the
    models refuse others already; this holds for a request made by hand too)."""
    try:
        return one_reading_statement(sql)
    except ValueError as exc:
        raise permanent(f"{what} {exc}", "QueryRefused") from None


def psql_argv(access: DatabaseAccess, sql: str) -> list[str]:
    fill = {"port": str(access.port), "user": access.user, "database": access.database}
    base = [part.format(**fill) for part in access.psql_command]
    return [
        *base,
        "-c",
        "BEGIN TRANSACTION READ ONLY",
        "-c",
        f"SET LOCAL statement_timeout = '{access.query_timeout_seconds}s'",
        "-c",
        sql,
        "-c",
        "ROLLBACK",
    ]


def value_digest(text: str) -> str:
    """The compared value's fingerprint: a hash, never the value."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def check_verdict(
    name: str, expect: str, rows: list[str] | None, error: str = "psql failed"
) -> CheckResult:
    """A check on the clone as a verdict: pass or fail, the row count and the hash of the
    value compared, never the rows themselves (they may be anyone's data, and the result goes
    into the status, the history, the worker's log and the notices). `rows` None: the query
    failed, and `error` is psql's error with what it quoted taken out."""
    wanted = expect.strip()
    if rows is None:
        return CheckResult(name=name, ok=False, detail=f"the query failed on the clone: {error}")
    actual = "\n".join(rows).strip()
    ok = actual == wanted
    said = "matches" if ok else "does not match"
    return CheckResult(
        name=name,
        ok=ok,
        detail=f"{len(rows)} row(s), {value_digest(actual)}: {said} the expected value "
        f"({value_digest(wanted)})",
    )


def check_pod_name(deployment: str, connection_name: str) -> str:
    digest = hashlib.sha256(connection_name.encode()).hexdigest()[:8]
    return f"{deployment[:40].rstrip('-')}-pitr-check-{digest}"


class DatabaseActivities:
    def __init__(
        self, core: client.CoreV1Api, apps: client.AppsV1Api, pods: PodExecActivities
    ) -> None:
        self.core = core
        self.apps = apps
        self.pods = pods
        self.gatekeeper = pods.gatekeeper

    async def _query(
        self, namespace: str, pod: str, container: str, access: DatabaseAccess, sql: str
    ) -> list[str]:
        """The rows psql prints (one line each, fields separated by spaces)."""
        out, err, code = await self.pods.run(
            namespace, pod, container, psql_argv(access, sql), access.query_timeout_seconds + 30
        )
        if code != 0:
            raise QueryFailed(err or out)
        return [line for line in out.splitlines() if line != ""]

    @activity.defn(name=refs.DB_SNAPSHOT.name)
    async def snapshot(self, request: SnapshotRequest) -> DatabaseSnapshot:
        access = request.access
        checks = [
            (check.name, one_select(check.sql, f"integrity check {check.name!r}"))
            for check in request.checks
        ]
        pod, container = await self.pods.ready_pod(
            request.namespace, request.deployment, access.container
        )
        Heartbeat(PodProgress).beat(PodProgress(pod=pod))
        try:
            tables = await self._query(request.namespace, pod, container, access, TABLES)
        except QueryFailed as exc:
            # Retried: the proxy or the instance may be restarting.
            raise ApplicationError(
                f"psql in pod {pod} could not read the table list: {exc}",
                type="DatabaseUnreachable",
            ) from None
        values: dict[str, float | None] = {}
        for name, sql in checks:
            try:
                rows = await self._query(request.namespace, pod, container, access, sql)
            except QueryFailed as exc:
                if _MISSING_RELATION.search(str(exc)):
                    values[name] = None  # the table is gone: reported, judged by the workflow
                    continue
                raise permanent(
                    f"integrity check {name!r} failed to run in pod {pod}: {exc.kind}; fix its "
                    "SQL in the catalog",
                    "IntegrityCheckInvalid",
                ) from None
            try:
                (value,) = rows
                values[name] = None if value == "NULL" else float(value)
            except ValueError:
                # How many rows, never what they hold: a refusal goes into the history.
                raise permanent(
                    f"integrity check {name!r} must return one number, got {len(rows)} row(s) "
                    "that are not one number",
                    "IntegrityCheckInvalid",
                ) from None
        return DatabaseSnapshot(at=dt.datetime.now(dt.UTC), tables=tables, values=values)

    @activity.defn(name=refs.CLONE_QUERIES.name)
    async def clone_queries(self, request: CloneQueriesRequest) -> list[CheckResult]:
        """The recovery's checks on the clone, through a check pod whose proxy names it."""
        access = request.access
        checks = [
            (check, one_select(check.sql, f"check {check.name!r}")) for check in request.checks
        ]
        if self.gatekeeper is not None:
            entry = self.gatekeeper.catalog.find(request.namespace, request.deployment)
            facts = {
                "kind": "pitr-clone",
                "clone": request.clone_connection_name.rsplit(":", 1)[-1],
                "checks": [c.model_dump(mode="json") for c in request.checks],
            }
            self.gatekeeper.require(
                request.grant,
                entry,
                entry.pitr.approvals if entry and entry.pitr else 1,
                facts,
                f"run checks on {request.clone_connection_name}",
            )
        name = await self._check_pod(request)
        try:
            container = await self._wait_ready(request.namespace, name, access)
            results = []
            for check, sql in checks:
                try:
                    rows = await self._query(request.namespace, name, container, access, sql)
                except QueryFailed as exc:
                    if "could not connect" in str(exc) or "Connection refused" in str(exc):
                        raise ApplicationError(
                            f"the check pod {name} cannot reach {request.clone_connection_name}",
                            type="DatabaseUnreachable",
                        ) from None
                    results.append(check_verdict(check.name, check.expect, None, exc.kind))
                    continue
                results.append(check_verdict(check.name, check.expect, rows))
            return results
        finally:
            await self._remove_pod(request.namespace, name)

    async def _check_pod(self, request: CloneQueriesRequest) -> str:
        name = check_pod_name(request.deployment, request.clone_connection_name)
        try:
            deployment = await self.apps.read_namespaced_deployment(
                request.deployment, request.namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(
                    f"deployment/{request.deployment} does not exist in namespace "
                    f"{request.namespace!r}",
                    "DeploymentNotFound",
                ) from None
            raise_for_api_error(exc, f"reading deployment/{request.deployment}")
        template: dict[str, Any] = self.apps.api_client.sanitize_for_serialization(
            deployment.spec.template
        )
        spec = template["spec"]
        proxy = proxy_container(spec, request.access.proxy_container)
        if proxy is None:
            raise permanent(
                f"deployment/{request.deployment} has no Cloud SQL Auth Proxy container "
                f"{request.access.proxy_container!r}; "
                "fix the catalog's database.proxy_container",
                "ProxyNotFound",
            )
        proxy["args"] = retarget(
            proxy.get("args") or [],
            request.source_connection_name,
            request.clone_connection_name,
            request.deployment,
        )
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            for container in spec.get("containers") or []:
                container.pop(probe, None)  # a check pod answers no traffic
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": request.namespace,
                "labels": {"app.kubernetes.io/managed-by": "modoru", CHECK_POD_LABEL: "true"},
                "annotations": {"modoru.dev/instance": request.clone_connection_name},
            },
            "spec": {**spec, "restartPolicy": "Never"},
        }
        try:
            await self.core.create_namespaced_pod(request.namespace, pod)
        except ApiException as exc:
            if exc.status != 409:  # 409: a retried attempt's pod is still there; use it
                raise_for_api_error(exc, f"creating the check pod {name}")
        return name

    async def _wait_ready(self, namespace: str, name: str, access: DatabaseAccess) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + access.check_pod_timeout_seconds
        heartbeat = Heartbeat(PodProgress)
        while True:
            heartbeat.beat(PodProgress(pod=name))
            try:
                pod = await self.core.read_namespaced_pod(name, namespace)
            except ApiException as exc:
                raise_for_api_error(exc, f"reading the check pod {name}")
            statuses = pod.status.container_statuses or []
            sidecars = pod.status.init_container_statuses or []
            started = all(
                s.state
                and (s.state.running or s.state.terminated and s.state.terminated.exit_code == 0)
                for s in sidecars
            )
            if (
                pod.status.phase == "Running"
                and statuses
                and started
                and all(s.state and s.state.running for s in statuses)
            ):
                names = [c.name for c in pod.spec.containers]
                container = access.container or names[0]
                if container not in names:
                    raise permanent(
                        f"the app's pods have no container {container!r} (containers: "
                        f"{', '.join(names)}); fix the catalog's database.container",
                        "ContainerNotFound",
                    )
                return container
            if pod.status.phase in ("Failed", "Succeeded"):
                raise permanent(
                    f"the check pod {name} ended ({pod.status.phase}) before the checks could run",
                    "CheckPodFailed",
                )
            if loop.time() > deadline:
                waiting = [
                    f"{s.name}: {s.state.waiting.reason}"
                    for s in statuses
                    if s.state and s.state.waiting
                ]
                raise permanent(
                    f"the check pod {name} was not running within "
                    f"{access.check_pod_timeout_seconds}s"
                    + (f" ({'; '.join(waiting)})" if waiting else ""),
                    "CheckPodNotReady",
                )
            await heartbeat.sleep(0.5, PodProgress(pod=name))

    async def _remove_pod(self, namespace: str, name: str) -> None:
        try:
            await self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                activity.logger.warning(
                    "could not remove the check pod %s (%s): remove it by hand", name, exc.status
                )
