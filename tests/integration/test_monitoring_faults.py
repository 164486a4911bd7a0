"""Verification through a struggling Cloud Monitoring and Cloud Logging: with a
fifth of their answers 500/503, or a quarter 429, each `immediate` rollback
onto the healthy release still completes, verified, with exactly one undo. A
read that failed is tried again (alone), never reported as an unhealthy
service. The faults hit ListTimeSeries (gRPC), alerts and alert policies
(REST) and entries.list (REST) through the sandbox's fault injection."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from googleapiclient.http import build_http
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.cloud_logging import CloudLogging
from activities.kubernetes import KubernetesActivities
from activities.notify import NotifyActivities
from activities.verify import VerifyActivities
from runbook.catalog import ApprovalPolicy, Catalog, ServiceEntry
from runbook.guard import MonitoringConfig
from runbook.models import Phase, RollbackRequest, RollbackResult, Severity
from runbook.postchecks import PostChecks
from sandbox.traffic import TrafficGenerator
from tests.conftest import METRICS_DELAY, RunningSandbox
from tests.integration.cd_stack import sandbox_monitoring
from tests.integration.test_api_faults import attempts, release_the_broken_version
from worker.api_errors import PlainApiErrors
from worker.main import WORKFLOWS
from workflows.deployment_rollback import DeploymentRollbackWorkflow

NAME = "tekutoko-api"
ROLLBACKS = int(
    os.environ.get("MODORU_FAULT_ROLLBACKS", "2")
)  # back to back, per fault mix; 10 for the full figure
# requests per second on loopback: enough for the error-ratio criterion's 20 requests a minute
RATE = 60
pytestmark = pytest.mark.integration

READS = ("timeSeries", "alerts", "alertPolicies", "entries")
FIVE_HUNDREDS = [
    {"resource": r, "status": s, "rate": rate}
    for r in READS
    for s, rate in ((500, 0.1), (503, 0.11))
]  # ~20%
TOO_MANY = [
    {"resource": r, "status": 429, "rate": 0.25, "retry_after_seconds": 1} for r in READS
]  # 25%


@pytest.fixture
async def queue(dev_env, sandbox: RunningSandbox, tmp_path) -> AsyncIterator[str]:
    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())

    def steady_traffic() -> None:
        sandbox.sandbox.traffic = TrafficGenerator(
            sandbox.sandbox._service_urls, ["/v1/walks"], RATE, 900
        )
        sandbox.sandbox.traffic.start()

    sandbox.call(steady_traffic)
    entry = ServiceEntry(
        name=NAME,
        deployment=NAME,
        service=NAME,
        approval=ApprovalPolicy(approvers=["sre-lead"]),
        monitoring=MonitoringConfig(preset="gke_l7", ingestion_delay_seconds=METRICS_DELAY),
        post_checks=PostChecks(ingestion_delay_seconds=METRICS_DELAY),
        verification_window_seconds=30,
        rollout_timeout_seconds=60,
    )
    name = f"monfaults-{uuid.uuid4().hex[:8]}"
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    channel = grpc.aio.insecure_channel(endpoints["cloud_monitoring"])
    async with aiohttp.ClientSession() as session:
        monitoring = sandbox_monitoring(endpoints, sandbox, session, channel)
        logs = CloudLogging(
            endpoints["cloud_logging"], build_http, project=endpoints["logging_project"]
        )
        k8s, verify = (
            KubernetesActivities(apps, core),
            VerifyActivities(apps, core, session, monitoring, logs),
        )
        activities = [
            CatalogActivities(Catalog(services=[entry])).lookup,
            k8s.plan_rollback,
            k8s.backup_deployment,
            k8s.rollout_undo,
            k8s.wait_rollout,
            verify.verify_service,
            NotifyActivities(environ={}, base_dir=tmp_path).send,
        ]
        async with Worker(
            dev_env.client,
            task_queue=name,
            workflows=WORKFLOWS,
            activities=activities,
            interceptors=[PlainApiErrors()],
            workflow_failure_exception_types=[Exception],
        ):
            yield name
    await channel.close()
    await api.close()


async def rollbacks_under(
    rules: list[dict], dev_env, sandbox: RunningSandbox, kube_client, queue: str
) -> list[float]:
    seconds = []
    try:
        for i in range(ROLLBACKS):
            if i:
                await release_the_broken_version(kube_client)
            sandbox.admin("faults", "PUT", {"rules": rules})
            mark = sandbox.mark()
            started = time.monotonic()
            handle = await dev_env.client.start_workflow(
                DeploymentRollbackWorkflow.run,
                RollbackRequest(
                    deployment=NAME,
                    severity=Severity.IMMEDIATE,
                    reason=f"monitoring faults run {i}",
                    requested_by="oncall",
                ),
                id=f"monfaults-{queue}-{i}",
                task_queue=queue,
            )
            result: RollbackResult = await asyncio.wait_for(handle.result(), 300)
            seconds.append(time.monotonic() - started)
            print(
                f"run {i}: {seconds[-1]:.1f}s, verification rounds "
                f"{result.status.verification.attempts}, retried: {await attempts(handle)}"
            )
            status = result.status
            assert status.phase == Phase.COMPLETED and status.verification.ok, status.message
            assert status.sla_met is True
            assert not any(c.unread for c in status.verification.checks)
            applied = [
                e
                for e in sandbox.requests_since(mark)
                if e["resource"] == "deployments" and e["verb"] == "patch" and e["status"] == 200
            ]
            assert len(applied) == 1, applied  # exactly one undo
            sandbox.admin("faults", "PUT", {"rules": []})
    finally:
        sandbox.admin("faults", "PUT", {"rules": []})
    return seconds


async def test_verification_reads_through_a_fifth_of_500s_and_503s(
    dev_env, sandbox, kube_client, queue
) -> None:
    seconds = await rollbacks_under(FIVE_HUNDREDS, dev_env, sandbox, kube_client, queue)
    injected = sandbox.call(lambda: dict(sandbox.sandbox.faults.injected))
    assert any(r == "timeSeries" for r, _ in injected) and sum(injected.values()) > 0, injected
    print(
        f"\nMonitoring/Logging 500/503 at ~20%: {ROLLBACKS} immediate rollbacks verified in "
        f"{', '.join(f'{s:.1f}s' for s in seconds)}; faulted {injected}"
    )


async def test_verification_reads_through_a_quarter_of_429s(
    dev_env, sandbox, kube_client, queue
) -> None:
    seconds = await rollbacks_under(TOO_MANY, dev_env, sandbox, kube_client, queue)
    injected = sandbox.call(lambda: dict(sandbox.sandbox.faults.injected))
    assert sum(injected.values()) > 0, injected
    print(
        f"\nMonitoring/Logging 429 at 25%: {ROLLBACKS} immediate rollbacks verified in "
        f"{', '.join(f'{s:.1f}s' for s in seconds)}; faulted {injected}"
    )
