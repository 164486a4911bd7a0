"""Verification after a rollback: pods Running and Ready, and the service's
health, readiness and API paths answering 2xx through its external address."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException
from temporalio import activity

from runbook.models import CheckResult, VerifyRequest, VerifyResult

from .errors import permanent, raise_for_api_status
from .kubernetes import selector_string

API_SAMPLES = 5  # one lucky answer must not pass a release that fails most calls
HTTP_TIMEOUT_SECONDS = 5


class VerifyActivities:
    def __init__(self, apps: client.AppsV1Api, core: client.CoreV1Api, session: aiohttp.ClientSession) -> None:
        self.apps = apps
        self.core = core
        self.session = session

    async def _base_url(self, namespace: str, service: str) -> str | None:
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

    async def _pods(self, request: VerifyRequest) -> CheckResult:
        deployment = await self.apps.read_namespaced_deployment(request.deployment, request.namespace)
        pods = await self.core.list_namespaced_pod(request.namespace, label_selector=selector_string(self.apps.api_client.sanitize_for_serialization(deployment.spec.selector)))
        want = deployment.spec.replicas or 0
        ready = [
            p for p in pods.items
            if p.status.phase == "Running" and all(cs.ready for cs in (p.status.container_statuses or [])) and p.metadata.deletion_timestamp is None
        ]
        ok = len(ready) == want == len(pods.items)
        return CheckResult(name="pods", ok=ok, detail=f"{len(ready)}/{want} Running and Ready, {len(pods.items)} pods in all")

    async def _http(self, name: str, url: str, samples: int) -> CheckResult:
        statuses = []
        for _ in range(samples):
            try:
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)) as response:
                    statuses.append(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return CheckResult(name=name, ok=False, detail=f"GET {url}: {type(exc).__name__}")
        ok = all(200 <= s < 300 for s in statuses)
        return CheckResult(name=name, ok=ok, detail=f"GET {url}: {', '.join(map(str, statuses))}")

    @activity.defn(name="verify.service")
    async def verify_service(self, request: VerifyRequest) -> VerifyResult:
        """Retry the checks within the window; pass as soon as one round is clean."""
        deadline = time.monotonic() + request.window_seconds
        attempts = 0
        checks: list[CheckResult] = []
        base_url = None
        while True:
            attempts += 1
            checks = [await self._pods(request)]
            base_url = await self._base_url(request.namespace, request.service)
            if base_url is None:
                checks.append(CheckResult(name="address", ok=False, detail=f"service/{request.service} has no external address yet"))
            else:
                for i, path in enumerate(request.paths):
                    name = ("health", "ready", "api")[i] if i < 3 else path
                    checks.append(await self._http(name, base_url + path, API_SAMPLES if name == "api" else 1))
            activity.heartbeat({"attempt": attempts, "failing": [c.name for c in checks if not c.ok]})
            if all(c.ok for c in checks):
                return VerifyResult(ok=True, checks=checks, attempts=attempts, base_url=base_url)
            if time.monotonic() + request.interval_seconds > deadline:
                return VerifyResult(ok=False, checks=checks, attempts=attempts, base_url=base_url)
            await asyncio.sleep(request.interval_seconds)
