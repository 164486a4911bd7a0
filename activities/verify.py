"""Verification after a rollback: pods Running and Ready, the service's
health, readiness and API paths answering 2xx through its external address,
and, where Cloud Monitoring is configured, the metrics since the rollback
(error ratio, p95, open alerts) within the catalog's recovery criteria; then
the runbook's post-checks (activities/postchecks.py): CPU and memory, the
database connection pool and errors in the logs."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aiohttp
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from runbook import activity_refs as refs
from runbook.guard import judge_recovery
from runbook.models import CheckResult, VerifyRequest, VerifyResult
from runbook.verification import DATA_CHECKS, DEADLINE_FIX

from .cloud_logging import CloudLogging
from .errors import permanent, raise_for_api_status
from .kubernetes import selector_string
from .metrics import MetricClock, Monitoring
from .postchecks import PostCheckReader, Timing, Unreadable, guarded

API_SAMPLES = 5  # one lucky answer must not pass a release that fails most calls
HTTP_TIMEOUT_SECONDS = 5
HEARTBEAT_SECONDS = 4  # while sleeping, when the workflow gave no heartbeat timeout
BEATS_PER_TIMEOUT = 3  # one late beat is no lost worker


class VerifyActivities:
    def __init__(
        self,
        apps: client.AppsV1Api,
        core: client.CoreV1Api,
        session: aiohttp.ClientSession,
        monitoring: Monitoring | None = None,
        logging: CloudLogging | None = None,
    ) -> None:
        self.apps = apps
        self.core = core
        self.session = session
        self.monitoring = monitoring
        self.post = PostCheckReader(apps, core, monitoring, logging)

    async def base_url(self, namespace: str, service: str) -> str | None:
        try:
            svc = await self.core.read_namespaced_service(service, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(
                    f"service/{service} does not exist in namespace {namespace!r}: fix the "
                    "catalog's service name",
                    "ServiceNotFound",
                ) from None
            raise_for_api_status(exc.status, f"reading service/{service}", exc.body)
        ingress = (
            svc.status.load_balancer.ingress if svc.status and svc.status.load_balancer else None
        ) or []
        if not ingress or not svc.spec.ports:
            return None
        host = ingress[0].ip or ingress[0].hostname
        return f"http://{host}:{svc.spec.ports[0].port}"

    async def deployment_pods(
        self, namespace: str, name: str, *, pods: bool = True
    ) -> tuple[Any, list[Any]]:
        try:
            deployment = await self.apps.read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(
                    f"deployment/{name} does not exist in namespace {namespace!r}",
                    "DeploymentNotFound",
                ) from None
            raise_for_api_status(exc.status, f"reading deployment/{name}", exc.body)
        if not pods:
            return deployment, []
        found = await self.core.list_namespaced_pod(
            namespace,
            label_selector=selector_string(
                self.apps.api_client.sanitize_for_serialization(deployment.spec.selector)
            ),
        )
        return deployment, found.items

    async def _pods(
        self, request: VerifyRequest, found: dict[str, Any] | None = None
    ) -> CheckResult:
        deployment, items = await self.deployment_pods(request.namespace, request.deployment)
        if found is not None:
            found["pods"] = items
        want = deployment.spec.replicas or 0
        ready = [
            p
            for p in items
            if p.status.phase == "Running"
            and all(cs.ready for cs in (p.status.container_statuses or []))
            and p.metadata.deletion_timestamp is None
        ]
        ok = len(ready) == want == len(items)
        return CheckResult(
            name="pods",
            ok=ok,
            detail=f"{len(ready)}/{want} Running and Ready, {len(items)} pods in all",
        )

    async def http_check(self, name: str, url: str, samples: int) -> CheckResult:
        statuses = []
        for _ in range(samples):
            try:
                async with self.session.get(
                    url, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)
                ) as response:
                    statuses.append(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return CheckResult(name=name, ok=False, detail=f"GET {url}: {type(exc).__name__}")
        ok = all(200 <= s < 300 for s in statuses)
        return CheckResult(name=name, ok=ok, detail=f"GET {url}: {', '.join(map(str, statuses))}")

    async def _metrics(self, request: VerifyRequest, timing: Timing) -> list[CheckResult]:
        """The recovery criteria over the whole minutes served since the rollout (the
        minutes are Cloud Monitoring's)."""
        if request.monitoring is None:
            return []
        if self.monitoring is None:
            return [
                CheckResult(
                    name="metrics",
                    ok=True,
                    detail="skipped: this worker has no Cloud Monitoring access "
                    "(MODORU_MONITORING_*)",
                )
            ]
        if request.monitoring.preset is None:
            return [
                CheckResult(
                    name="metrics",
                    ok=True,
                    detail="skipped: monitoring.preset is not set for this service in the "
                    "catalog (gke_l7, managed_prometheus, custom or promql)",
                )
            ]
        if self.monitoring.project_for(request.monitoring) is None:
            return [
                CheckResult(
                    name="metrics",
                    ok=True,
                    detail="skipped: no monitoring project for this service (catalog "
                    "monitoring.project or MODORU_MONITORING_PROJECT)",
                )
            ]
        source = self.monitoring.source(request.monitoring)
        delay = source.ingestion_delay_seconds
        alert_query = self.monitoring.alert_query(
            request.monitoring, request.namespace, request.service
        )
        alerts = None
        if alert_query is not None and request.recovery.no_open_alerts:
            alerts = [
                f"{a.policy or a.name}"
                for a in (await self.monitoring.open_alerts(alert_query)).alerts
            ]
        found: list[CheckResult] = []
        for name, what in (("error_ratio", "the error rate"), ("p95", "p95 latency")):
            waiting = (
                # a rate needs two scrapes of the pods serving since the rollout
                timing.after(name, what, source.promql_window_seconds() + delay)
                if source.promql
                else timing.gate(name, what, delay)
            )
            if waiting is not None:
                found.append(waiting)
        if alerts is not None:
            found += [
                CheckResult(name=name, ok=ok, detail=detail)
                for name, ok, detail in judge_recovery(0, None, None, alerts, request.recovery)
                if name == "alerts"
            ]
        if len(found) > (alerts is not None):
            return found
        start, end = timing.window(delay, whole_minutes=not source.promql)
        query = self.monitoring.query(
            request.monitoring, request.namespace, request.service, start=start, end=end
        )
        assert query is not None
        reading = await self.monitoring.service_health(query)
        judged = []
        for name, ok, detail in judge_recovery(
            reading.requests, reading.error_ratio, reading.p95_ms, alerts, request.recovery
        ):
            too_little = (
                name == "error_ratio" and reading.requests < request.recovery.min_requests
            ) or (name == "p95" and reading.p95_ms is None)
            judged.append(
                timing.next_minute(
                    name,
                    detail,
                    end,
                    delay,
                    period=source.scrape_interval_seconds if source.promql else None,
                )
                if too_little and not ok
                else CheckResult(name=name, ok=ok, detail=detail)
            )
        return judged

    async def _group(
        self, name: str, request: VerifyRequest, timing: Timing, found: dict[str, Any]
    ) -> list[CheckResult]:
        """One group of checks, read together; Unreadable when a read failed on the reader's
        side."""
        checks = request.post_checks
        if name == "pods":
            return [await guarded("the pods", self._pods(request, found))]
        if name == "http":
            base_url = await guarded(
                f"service/{request.service}", self.base_url(request.namespace, request.service)
            )
            found["base_url"] = base_url
            if base_url is None:
                return [
                    CheckResult(
                        name="address",
                        ok=False,
                        detail=f"service/{request.service} has no external address yet",
                    )
                ]
            results = []
            for i, path in enumerate(request.paths):
                check = ("health", "ready", "api")[i] if i < 3 else path
                results.append(
                    await self.http_check(
                        check, base_url + path, API_SAMPLES if check == "api" else 1
                    )
                )
            return results
        if name == "metrics":
            return await guarded("Cloud Monitoring", self._metrics(request, timing))
        assert checks is not None
        if name == "resources":
            deployment = await guarded(
                f"deployment/{request.deployment}", self._deployment(request)
            )
            return await self.post.resources(request, checks, timing, deployment)
        if name == "connection_pool":
            return [await self.post.connection_pool(request, checks, timing)]
        deployment = await guarded(f"deployment/{request.deployment}", self._deployment(request))
        return [
            await self.post.logs(
                request, checks, timing, (deployment.spec.selector.match_labels or {})
            )
        ]

    async def _deployment(self, request: VerifyRequest) -> Any:
        deployment, _ = await self.deployment_pods(
            request.namespace, request.deployment, pods=False
        )
        return deployment

    def _groups(self, request: VerifyRequest) -> list[str]:
        groups = ["pods", "http", "metrics"]
        checks = request.post_checks
        if checks is not None:
            groups += [
                g
                for g, on in (
                    ("resources", checks.resources),
                    ("connection_pool", checks.connection_pool),
                    ("logs", checks.logs),
                )
                if on
            ]
        return groups

    async def _evidence(
        self, request: VerifyRequest, found: dict[str, Any]
    ) -> dict[str, list[str]]:
        """The pods' recent logs; the pods are read again when a resumed attempt kept their
        check."""
        if request.post_checks is None or not request.post_checks.pod_log_lines:
            return {}
        pods: list[Any] | None = found.get("pods")
        if pods is None:
            try:
                _, listed = await guarded(
                    "the pods", self.deployment_pods(request.namespace, request.deployment)
                )
            except (Unreadable, ApplicationError):
                return {}
            pods = listed
        return await self.post.pod_logs(request.namespace, pods, request.post_checks)

    def _timing(self, request: VerifyRequest, since: dt.datetime) -> Timing:
        clock = self.monitoring.clock if self.monitoring is not None else MetricClock()
        waits = request.deadline_seconds or request.window_seconds
        return Timing(since, since + dt.timedelta(seconds=waits), clock)

    @activity.defn(name=refs.VERIFY_SERVICE.name)
    async def verify_service(self, request: VerifyRequest) -> VerifyResult:
        """Read every check until it is settled: passed, or failed on real data. The pods and
        HTTP checks are read again until they pass or `window_seconds` has gone by; a check
        on late data (metrics, CPU and memory, the pool, the logs) is read once its first whole
        minute is visible, and is judged once, on that data. Verification ends when every
        check is settled and no later: at the latest at its deadline, where a check still
        waiting for data is reported as not judged. A read that failed (429, 5xx, no answer)
        is read again alone; when the deadline comes with only unread checks failing, the
        activity fails retryably (resuming from its heartbeat): "could not read" is never
        reported as an unhealthy service."""
        resumed = (
            (activity.info().heartbeat_details or [None])[0]
            if activity.info().attempt > 1
            else None
        )
        resumed = resumed if isinstance(resumed, dict) and "since" in resumed else None
        since = dt.datetime.fromisoformat(resumed["since"]) if resumed else dt.datetime.now(dt.UTC)
        timing = self._timing(request, since)
        read: dict[str, list[CheckResult]] = {
            g: [CheckResult.model_validate(c) for c in cs]
            for g, cs in (resumed or {}).get("read", {}).items()
        }
        settled = {c.name: c for cs in read.values() for c in cs if _settled(c)}
        attempts = int((resumed or {}).get("attempts", 0))
        found: dict[str, Any] = {"base_url": (resumed or {}).get("base_url")}
        groups = self._groups(request)
        while True:
            attempts += 1
            for group in groups:
                if group in read and all(c.name in settled for c in read[group]):
                    continue
                try:
                    checks = await self._group(group, request, timing, found)
                except Unreadable as exc:
                    checks = [CheckResult(name=group, ok=False, detail=str(exc), unread=True)]
                read[group] = [settled.get(c.name, c) for c in checks]
                settled.update({c.name: c for c in read[group] if _settled(c)})
            checks = [c for g in groups for c in read[g]]
            now = dt.datetime.now(dt.UTC)
            waiting = [c for c in checks if c.pending]
            activity.heartbeat(
                {
                    "since": since.isoformat(),
                    "deadline": timing.deadline.isoformat(),
                    "attempts": attempts,
                    "base_url": found.get("base_url"),
                    "read": {g: [c.model_dump(mode="json") for c in cs] for g, cs in read.items()},
                    "waiting": [f"{c.name}: {c.detail}" for c in waiting],
                    "failing": [c.name for c in checks if not c.ok and not c.pending],
                }
            )
            instant_done = all(c.ok for c in checks if c.name not in DATA_CHECKS) or (
                now >= since + dt.timedelta(seconds=request.window_seconds)
            )
            late_done = all(c.name in settled for c in checks if c.name in DATA_CHECKS)
            pause = self._pause(request, checks, now)
            if (late_done and instant_done) or now + dt.timedelta(seconds=pause) > timing.deadline:
                checks = [_expired(c, timing) if c.pending else c for c in checks]
                failing = [c for c in checks if not c.ok]
                if failing and all(c.unread for c in failing):
                    said = "; ".join(c.detail for c in failing)
                    raise ApplicationError(
                        f"verification could not read everything by its deadline ({said}); "
                        "retrying",
                        type="VerificationUnreadable",
                    )
                logs = await self._evidence(request, found)
                return VerifyResult(
                    ok=not failing,
                    checks=checks,
                    attempts=attempts,
                    base_url=found.get("base_url"),
                    pod_logs=logs,
                )
            await self._sleep(pause)

    def _pause(self, request: VerifyRequest, checks: list[CheckResult], now: dt.datetime) -> float:
        """Until the next read: the poll interval while a check can change any moment, else
        until the first waiting check becomes readable."""
        if any(not c.ok and not c.pending and c.name not in DATA_CHECKS for c in checks) or any(
            c.unread for c in checks
        ):
            return request.interval_seconds
        due = [c.readable_at for c in checks if c.pending and c.readable_at is not None]
        if not due:
            return request.interval_seconds
        return max(request.interval_seconds, (min(due) - now).total_seconds() + 0.5)

    @staticmethod
    async def _sleep(seconds: float) -> None:
        """Sleep, heartbeating BEATS_PER_TIMEOUT times per the heartbeat timeout the workflow
        gave (every HEARTBEAT_SECONDS without one): each beat that reaches the server costs an
        action, so a sleep beats no more often than its timeout needs."""
        timeout = activity.info().heartbeat_timeout if activity.in_activity() else None
        every = timeout.total_seconds() / BEATS_PER_TIMEOUT if timeout else HEARTBEAT_SECONDS
        while seconds > 0:
            step = min(seconds, every)
            await asyncio.sleep(step)
            seconds -= step
            if seconds > 0:
                activity.heartbeat()


def _settled(check: CheckResult) -> bool:
    """Passed, or failed on real data (a late-data check is judged once)."""
    if check.pending or check.unread:
        return False
    return check.ok or check.name in DATA_CHECKS


def _expired(check: CheckResult, timing: Timing) -> CheckResult:
    """A check still waiting for its data at the deadline: not judged, never failed."""
    deadline = timing.clock.at(timing.deadline)
    return check.model_copy(
        update={
            "ok": True,
            "pending": False,
            "judged": False,
            "detail": f"not judged by verification's deadline {deadline:%H:%M:%S} UTC "
            f"({check.detail}); {DEADLINE_FIX}",
        }
    )
