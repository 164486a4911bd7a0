"""Verification after a rollback: pods Running and Ready, the service's
health, readiness and API paths answering 2xx through its external address,
and, where Cloud Monitoring is configured, the metrics since the rollback
(error ratio, p95, open alerts) within the catalog's recovery criteria."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import aiohttp
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from pydantic import BaseModel
from temporalio import activity

from runbook import activity_refs as refs
from runbook.guard import judge_recovery
from runbook.models import CheckResult, VerifyRequest, VerifyResult
from runbook.monitoring import ceil_minute

from .errors import permanent, raise_for_api_status
from .heartbeat import Heartbeat
from .kubernetes import selector_string
from .metrics import Monitoring


class VerifyProgress(BaseModel):
    """The verification round reached and the checks still failing."""

    attempt: int
    failing: list[str]



API_SAMPLES = 5  # one lucky answer must not pass a release that fails most calls
HTTP_TIMEOUT_SECONDS = 5


class VerifyActivities:
    def __init__(self, apps: client.AppsV1Api, core: client.CoreV1Api, session: aiohttp.ClientSession, monitoring: Monitoring | None = None) -> None:
        self.apps = apps
        self.core = core
        self.session = session
        self.monitoring = monitoring

    async def base_url(self, namespace: str, service: str) -> str | None:
        try:
            svc = await self.core.read_namespaced_service(service, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(f"service/{service} does not exist in namespace {namespace!r}: fix the catalog's service name", "ServiceNotFound") from None
            raise_for_api_status(exc.status, f"reading service/{service}", exc.body)
        ingress = (svc.status.load_balancer.ingress if svc.status and svc.status.load_balancer else None) or []
        if not ingress or not svc.spec.ports:
            return None
        host = ingress[0].ip or ingress[0].hostname
        return f"http://{host}:{svc.spec.ports[0].port}"

    async def deployment_pods(self, namespace: str, name: str) -> tuple[Any, list[Any]]:
        try:
            deployment = await self.apps.read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(f"deployment/{name} does not exist in namespace {namespace!r}", "DeploymentNotFound") from None
            raise_for_api_status(exc.status, f"reading deployment/{name}", exc.body)
        pods = await self.core.list_namespaced_pod(namespace, label_selector=selector_string(self.apps.api_client.sanitize_for_serialization(deployment.spec.selector)))
        return deployment, pods.items

    async def _pods(self, request: VerifyRequest) -> CheckResult:
        deployment, items = await self.deployment_pods(request.namespace, request.deployment)
        want = deployment.spec.replicas or 0
        ready = [
            p for p in items
            if p.status.phase == "Running" and all(cs.ready for cs in (p.status.container_statuses or [])) and p.metadata.deletion_timestamp is None
        ]
        ok = len(ready) == want == len(items)
        return CheckResult(name="pods", ok=ok, detail=f"{len(ready)}/{want} Running and Ready, {len(items)} pods in all")

    async def http_check(self, name: str, url: str, samples: int) -> CheckResult:
        statuses = []
        for _ in range(samples):
            try:
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)) as response:
                    statuses.append(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return CheckResult(name=name, ok=False, detail=f"GET {url}: {type(exc).__name__}")
        ok = all(200 <= s < 300 for s in statuses)
        return CheckResult(name=name, ok=ok, detail=f"GET {url}: {', '.join(map(str, statuses))}")

    async def _metrics(self, request: VerifyRequest, since: dt.datetime) -> list[CheckResult]:
        """The recovery criteria over the complete minutes served since
        verification began (`since` is wall time; the minutes are Cloud Monitoring's)."""
        if request.monitoring is None:
            return []
        if self.monitoring is None:
            return [CheckResult(name="metrics", ok=True, detail="skipped: this worker has no Cloud Monitoring access (MODORU_MONITORING_*)")]
        if request.monitoring.preset is None:
            return [CheckResult(name="metrics", ok=True, detail="skipped: monitoring.preset is not set for this service in the catalog (gke_l7, managed_prometheus or custom)")]
        if self.monitoring.project_for(request.monitoring) is None:
            return [CheckResult(name="metrics", ok=True, detail="skipped: no monitoring project for this service (catalog monitoring.project or MODORU_MONITORING_PROJECT)")]
        source = self.monitoring.source(request.monitoring)
        start = ceil_minute(self.monitoring.clock.at(since))
        _, end = self.monitoring.latest_window(request.monitoring)
        alert_query = self.monitoring.alert_query(request.monitoring, request.namespace, request.service)
        alerts = None
        if alert_query is not None and request.recovery.no_open_alerts:
            alerts = [f"{a.policy or a.name}" for a in (await self.monitoring.open_alerts(alert_query)).alerts]
        if end <= start:
            first = start + dt.timedelta(seconds=60)
            wait = (f"waiting for the first complete minute after the rollback ({start:%H:%M:%S}-{first:%H:%M:%S} UTC), "
                    f"readable {source.ingestion_delay_seconds} s after it ends")
            found = [("error_ratio", False, wait), ("p95", False, wait)]
            if alerts is not None:
                found += [c for c in judge_recovery(0, None, None, alerts, request.recovery) if c[0] == "alerts"]
            return [CheckResult(name=name, ok=ok, detail=detail) for name, ok, detail in found]
        query = self.monitoring.query(request.monitoring, request.namespace, request.service, start=start, end=end)
        assert query is not None
        reading = await self.monitoring.service_health(query)
        return [CheckResult(name=name, ok=ok, detail=detail)
                for name, ok, detail in judge_recovery(reading.requests, reading.error_ratio, reading.p95_ms, alerts, request.recovery)]

    @activity.defn(name=refs.VERIFY_SERVICE.name)
    async def verify_service(self, request: VerifyRequest) -> VerifyResult:
        """Retry the checks within the window; pass as soon as one round is clean."""
        deadline = time.monotonic() + request.window_seconds
        since = dt.datetime.now(dt.UTC)
        attempts = 0
        checks: list[CheckResult] = []
        base_url = None
        heartbeat = Heartbeat(VerifyProgress)
        while True:
            attempts += 1
            checks = [await self._pods(request)]
            base_url = await self.base_url(request.namespace, request.service)
            if base_url is None:
                checks.append(CheckResult(name="address", ok=False, detail=f"service/{request.service} has no external address yet"))
            else:
                for i, path in enumerate(request.paths):
                    name = ("health", "ready", "api")[i] if i < 3 else path
                    checks.append(await self.http_check(name, base_url + path, API_SAMPLES if name == "api" else 1))
            checks += await self._metrics(request, since)
            progress = VerifyProgress(attempt=attempts, failing=[c.name for c in checks if not c.ok])
            heartbeat.beat(progress)
            if all(c.ok for c in checks):
                return VerifyResult(ok=True, checks=checks, attempts=attempts, base_url=base_url)
            if time.monotonic() + request.interval_seconds > deadline:
                return VerifyResult(ok=False, checks=checks, attempts=attempts, base_url=base_url)
            await heartbeat.sleep(request.interval_seconds, progress)
