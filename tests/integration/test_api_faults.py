"""Rollbacks through a flaky Kubernetes API: with a fifth of the API's answers
500/503, or a quarter 429 with Retry-After, each `immediate` rollback still
completes within its SLA, with exactly one undo PATCH applied. Before retry
budgets (six attempts, ~31 s) most of these runs ended failed."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.kubernetes import KubernetesActivities
from activities.notify import NotifyActivities
from activities.verify import VerifyActivities
from runbook.catalog import ApprovalPolicy, Catalog, ServiceEntry
from runbook.models import Phase, RollbackRequest, RollbackResult, Severity
from tests.conftest import RunningSandbox
from worker.api_errors import PlainApiErrors
from worker.main import WORKFLOWS
from workflows.deployment_rollback import DeploymentRollbackWorkflow

NS, NAME = "default", "tekutoko-api"
IMAGE = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"
ROLLBACKS = int(
    os.environ.get("MODORU_FAULT_ROLLBACKS", "2")
)  # back to back, per fault mix (docs/reliability.md ran 10)
SCALE = float(
    os.environ.get("MODORU_FAULT_SCALE", "1")
)  # multiplies every fault rate (docs/reliability.md)
pytestmark = pytest.mark.integration

FIVE_HUNDREDS = [
    {"status": 500, "rate": 0.1},
    {"status": 503, "rate": 0.11},
]  # ~20% of all API answers
LATENCY = [
    {"latency_ms": 300, "rate": 1.0},
    {"latency_ms": 2000, "rate": 0.1},
]  # every answer 0.3 s late, one in ten 2 s more
TOO_MANY = [
    {"status": 429, "rate": 0.125, "retry_after_seconds": 1},
    {"status": 429, "rate": 0.143, "retry_after_seconds": 2},
]  # ~25%


@pytest.fixture
async def queue(
    dev_env: WorkflowEnvironment, sandbox: RunningSandbox, tmp_path
) -> AsyncIterator[str]:
    catalog = Catalog(
        services=[
            ServiceEntry(
                name=NAME,
                deployment=NAME,
                service=NAME,
                approval=ApprovalPolicy(approvers=["sre-lead"]),
                verification_window_seconds=30,
                rollout_timeout_seconds=60,
            )
        ]
    )
    name = f"faults-{uuid.uuid4().hex[:8]}"
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    async with aiohttp.ClientSession() as session:
        k8s, verify = KubernetesActivities(apps, core), VerifyActivities(apps, core, session)
        activities = [
            CatalogActivities(catalog).lookup,
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
    await api.close()


async def release_the_broken_version(kube_client) -> None:
    """Without faults: 1.3.0 (the release with 60% errors) live and settled, so
    that each rollback goes back to the healthy 1.2.0."""
    apps, _ = kube_client
    apps.patch_namespaced_deployment(
        NAME,
        NS,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "api", "image": f"{IMAGE}:1.3.0"}]}}
            }
        },
    )
    for _ in range(200):
        d = apps.read_namespaced_deployment(NAME, NS)
        if (
            d.status.observed_generation == d.metadata.generation
            and d.status.updated_replicas == d.status.available_replicas == d.status.replicas == 3
        ):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("1.3.0 never settled")


async def rollbacks_under(
    rules: list[dict],
    dev_env: WorkflowEnvironment,
    sandbox: RunningSandbox,
    kube_client,
    queue: str,
) -> list[float]:
    rules = [{**r, "rate": min(1.0, r["rate"] * SCALE)} for r in rules]
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
                    reason=f"faults run {i}",
                    requested_by="oncall",
                ),
                id=f"faults-{queue}-{i}",
                task_queue=queue,
            )
            result: RollbackResult = await handle.result()
            seconds.append(time.monotonic() - started)
            print(f"run {i}: {seconds[-1]:.1f}s, attempts: {await attempts(handle)}")
            status = result.status
            assert status.to_revision is not None and any(
                ":1.2.0" in i for i in result.plan.to_images
            ), result.plan
            assert status.phase == Phase.COMPLETED and status.verification.ok, status.message
            assert status.sla_met is True and status.timings["mitigated"] <= status.sla_deadline
            deployment_writes = [
                e
                for e in sandbox.requests_since(mark)
                if e["resource"] == "deployments" and e["verb"] == "patch"
            ]
            applied = [e for e in deployment_writes if e["status"] == 200]
            assert len(applied) == 1, (
                deployment_writes
            )  # exactly one undo took effect; refused PATCHes changed nothing
            sandbox.admin("faults", "PUT", {"rules": []})
    finally:
        sandbox.admin("faults", "PUT", {"rules": []})
    return seconds


async def attempts(handle) -> dict[str, int]:
    """Attempts of each activity that needed more than one (the history keeps the last attempt's
    number)."""
    scheduled, found = {}, {}
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = (
                event.activity_task_scheduled_event_attributes.activity_type.name
            )
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            if started.attempt > 1:
                found[scheduled[started.scheduled_event_id]] = started.attempt
    return found


def faulted(sandbox: RunningSandbox, statuses: set[int]) -> int:
    return sum(1 for e in sandbox.requests_since(0) if e["status"] in statuses)


async def test_immediate_rollbacks_complete_through_a_fifth_of_500s_and_503s(
    dev_env, sandbox, kube_client, queue
) -> None:
    seconds = await rollbacks_under(FIVE_HUNDREDS, dev_env, sandbox, kube_client, queue)
    total = [
        e
        for e in sandbox.requests_since(0)
        if e["resource"]
        in ("deployments", "replicasets", "configmaps", "pods", "namespaces", "services")
    ]
    assert (
        faulted(sandbox, {500, 503}) >= 0.1 * len(total) > 0
    )  # the faults were there to get through
    print(
        f"\n500/503 at ~{20 * SCALE:g}%: {ROLLBACKS} immediate rollbacks in "
        f"{', '.join(f'{s:.1f}s' for s in seconds)}"
    )


async def test_immediate_rollbacks_complete_through_a_quarter_of_429s(
    dev_env, sandbox, kube_client, queue
) -> None:
    seconds = await rollbacks_under(TOO_MANY, dev_env, sandbox, kube_client, queue)
    assert faulted(sandbox, {429}) > 0
    print(
        f"\n429 (Retry-After 1-2s) at ~{25 * SCALE:g}%: {ROLLBACKS} immediate rollbacks in "
        f"{', '.join(f'{s:.1f}s' for s in seconds)}"
    )


async def test_immediate_rollbacks_complete_through_a_slow_api(
    dev_env, sandbox, kube_client, queue
) -> None:
    seconds = await rollbacks_under(LATENCY, dev_env, sandbox, kube_client, queue)
    print(
        f"\nlatency (every answer +0.3 s, ~10% +2 s more): {ROLLBACKS} immediate rollbacks in "
        f"{', '.join(f'{s:.1f}s' for s in seconds)}"
    )
