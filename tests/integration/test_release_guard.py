"""The release guard for real: the sandbox serves steady traffic, the metrics
come through the official gRPC client from the emulator, alerts through the
REST path, and a bad release is rolled back with the severity the runbook
gives it. Verification then holds the rollback to the metric criteria."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import grpc
import pytest
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.guard import GuardActivities
from activities.kubernetes import KubernetesActivities
from activities.metrics import MetricsActivities
from activities.notify import NotifyActivities
from activities.verify import VerifyActivities
from runbook.catalog import ApprovalPolicy, Catalog, Channel, ServiceEntry
from runbook.guard import MonitoringConfig
from runbook.guard_models import GuardPhase, GuardRequest, GuardResult, GuardStatus
from runbook.models import ApprovalSignal, Phase, RollbackRequest, Severity
from runbook.postchecks import PostChecks
from sandbox.traffic import TrafficGenerator
from tests.conftest import METRICS_DELAY, RunningSandbox
from tests.integration.cd_stack import sandbox_monitoring
from worker.main import WORKFLOWS
from workflows.deployment_rollback import DeploymentRollbackWorkflow, rollback_workflow_id
from workflows.release_guard import ReleaseGuardWorkflow, guard_workflow_id

pytestmark = pytest.mark.integration
INTERVAL = 2.0
# requests per second, loopback only: 180 in a one-minute window, so 15% errors read above 10%
RATE = 60
REGISTRY = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"
T = TypeVar("T")


@dataclass
class GuardStack:
    client: object
    queue: str
    sandbox: RunningSandbox
    apps: kube.AppsV1Api
    catalog: Catalog


@pytest.fixture
async def guarded(dev_env, sandbox: RunningSandbox, tmp_path, request) -> AsyncIterator[GuardStack]:
    preset = getattr(request, "param", "gke_l7")  # the guard's tests run with each preset
    endpoints = json.loads(sandbox.sandbox.endpoints_path.read_text())

    def quicken() -> None:
        sandbox.sandbox.traffic = TrafficGenerator(
            sandbox.sandbox._service_urls, ["/v1/walks"], RATE, 300
        )
        sandbox.sandbox.traffic.start()

    sandbox.call(quicken)
    entry = ServiceEntry(
        name="tekutoko-api",
        deployment="tekutoko-api",
        service="tekutoko-api",
        approval=ApprovalPolicy(approvers=["sre-lead"]),
        channels=[Channel(kind="jsonl", path=str(tmp_path / "notices.jsonl"))],
        monitoring=MonitoringConfig(
            preset=preset, window_seconds=60, ingestion_delay_seconds=METRICS_DELAY
        ),
        verification_window_seconds=25,
        rollout_timeout_seconds=60,
        # the sandbox shows a minute's points 10 s after it ends, not Google's 2-4 minutes
        post_checks=PostChecks(ingestion_delay_seconds=METRICS_DELAY),
    )
    queue = f"guard-{uuid.uuid4().hex[:8]}"
    api = await kube_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    channel = grpc.aio.insecure_channel(endpoints["cloud_monitoring"])
    async with aiohttp.ClientSession() as session:
        monitoring = sandbox_monitoring(endpoints, sandbox, session, channel)
        k8s, verify = (
            KubernetesActivities(apps, core),
            VerifyActivities(apps, core, session, monitoring),
        )
        guard, metrics = GuardActivities(verify, monitoring), MetricsActivities(monitoring)
        catalog = Catalog(services=[entry])
        activities = [
            CatalogActivities(catalog).lookup,
            k8s.plan_rollback,
            k8s.backup_deployment,
            k8s.rollout_undo,
            k8s.wait_rollout,
            verify.verify_service,
            NotifyActivities(environ={}, base_dir=tmp_path).send,
            guard.baseline,
            guard.watch,
            metrics.service_health,
            metrics.open_alerts,
        ]
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=activities,
            workflow_failure_exception_types=[Exception],
        ):
            yield GuardStack(dev_env.client, queue, sandbox, apps, catalog)
    await channel.close()
    await api.close()


async def until(
    what: str,
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], object],
    show: Callable[[T], str],
    timeout: float,
    interval: float = 0.1,
) -> T:
    """Read until `done` holds for what was read, and return that. After `timeout` seconds the
    test fails, naming what it waited for and what it last saw: it never goes on without it."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last saw {show(value)}"
            )
        await asyncio.sleep(interval)


def guard_phase(status: GuardStatus) -> str:
    return f"guard phase {status.phase.value}: {status.message or '(no message)'}"


def rollout(d: kube.V1Deployment) -> str:
    s = d.status
    return (
        f"generation {d.metadata.generation} (observed {s.observed_generation}), "
        f"replicas {d.spec.replicas} wanted, {s.replicas} in all, {s.updated_replicas} updated, "
        f"{s.available_replicas} available"
    )


async def release(stack: GuardStack, tag: str) -> float:
    """Set the image as a CD pipeline would; returns when the new pods serve alone."""
    patch = {
        "metadata": {"annotations": {"kubernetes.io/change-cause": f"release {tag}"}},
        "spec": {
            "template": {"spec": {"containers": [{"name": "api", "image": f"{REGISTRY}:{tag}"}]}}
        },
    }
    await stack.apps.patch_namespaced_deployment("tekutoko-api", "default", patch)
    await until(
        f"release {tag} to roll out (every replica updated and available)",
        lambda: stack.apps.read_namespaced_deployment("tekutoko-api", "default"),
        lambda d: (
            d.status.observed_generation >= d.metadata.generation
            and d.status.updated_replicas
            == d.status.replicas
            == d.status.available_replicas
            == d.spec.replicas
        ),
        rollout,
        timeout=30,
        interval=0.05,
    )
    return time.time()


async def guard_a_release(
    stack: GuardStack, bad_tag: str
) -> tuple[GuardResult, float, dt.datetime]:
    leftover = stack.client.get_workflow_handle(rollback_workflow_id("default", "tekutoko-api"))
    with contextlib.suppress(Exception):  # another test's rollback of the same deployment
        await leftover.terminate("test isolation")
    await release(stack, "1.2.0")  # a healthy release to start from
    await asyncio.to_thread(
        stack.sandbox.until_next_minute
    )  # a full minute of healthy traffic for the baseline, readable
    await asyncio.to_thread(stack.sandbox.until_readable)
    request = GuardRequest(
        deployment="tekutoko-api",
        duration_seconds=300,
        interval_seconds=INTERVAL,
        requested_by="cd-pipeline",
        language="en",
    )
    handle = await stack.client.start_workflow(
        ReleaseGuardWorkflow.run,
        request,
        id=f"{guard_workflow_id('default', 'tekutoko-api')}-{uuid.uuid4().hex[:6]}",
        task_queue=stack.queue,
    )
    # The bad release only once the guard watches: its baseline is the healthy release's.
    await until(
        "the guard to take its baseline and watch (phase watching)",
        lambda: handle.query(ReleaseGuardWorkflow.status),
        lambda status: status.phase is GuardPhase.WATCHING,
        guard_phase,
        timeout=30,
    )
    rolled_out = await release(stack, bad_tag)
    rollback = stack.client.get_workflow_handle(rollback_workflow_id("default", "tekutoko-api"))
    await until(
        f"the guard to start a rollback of {bad_tag}",
        lambda: handle.query(ReleaseGuardWorkflow.status),
        lambda status: status.rollback_workflow_id,
        lambda status: status.model_dump_json(),
        timeout=90,
    )
    started = (await rollback.describe()).start_time
    rollback_status = await rollback.query(DeploymentRollbackWorkflow.status)
    if rollback_status.severity is Severity.INVESTIGATE:
        await until(
            "the investigate rollback to wait for approval (phase awaiting_approval)",
            lambda: rollback.query(DeploymentRollbackWorkflow.status),
            lambda status: status.phase is Phase.AWAITING_APPROVAL,
            lambda status: f"rollback phase {status.phase.value}: {status.message or '(none)'}",
            timeout=30,
        )
        await rollback.signal(DeploymentRollbackWorkflow.approve, ApprovalSignal(by="sre-lead"))
    result: GuardResult = await asyncio.wait_for(handle.result(), 120)
    return result, rolled_out, started


@pytest.mark.parametrize("guarded", ["gke_l7", "managed_prometheus"], indirect=True)
@pytest.mark.parametrize(
    ("tag", "severity", "confirm_windows"),
    [
        ("1.3.0", "immediate", 0),  # about 60% errors
        ("1.3.1-flaky", "investigate", 1),  # about 15% errors
        ("1.3.1-slow", "investigate", 1),  # p95 about 7x the baseline
    ],
)
async def test_a_bad_release_is_rolled_back_with_the_runbooks_severity(
    guarded: GuardStack, tag: str, severity: str, confirm_windows: int
) -> None:
    result, rolled_out, started = await guard_a_release(guarded, tag)
    status = result.status
    assert status.rollback_severity == severity, status.last.verdict if status.last else status
    assert status.phase is GuardPhase.ROLLED_BACK, status.message
    # The decision rests on the bad release's own minutes: the window it was made on began
    # no earlier than the minute the new version took over, and the breach was seen before the
    # rollback began. How soon that comes is a figure (bench.detection), not bounded here.
    took_over = guarded.sandbox.metric_clock.at(dt.datetime.fromtimestamp(rolled_out, dt.UTC))
    assert status.last and status.last.metrics and status.last.breach_at
    assert status.last.metrics.window_start >= took_over.replace(second=0, microsecond=0)
    assert status.last.breach_at <= started
    if confirm_windows:  # confirmed on a window that began after the breach was first seen
        assert (
            status.last.metrics
            and status.last.metrics.window_start
            >= guarded.sandbox.metric_clock.at(status.last.breach_at)
        )
    rollback = guarded.client.get_workflow_handle(rollback_workflow_id("default", "tekutoko-api"))
    final = await rollback.query(DeploymentRollbackWorkflow.status)
    assert final.image_diff == [f"{REGISTRY}:{tag} -> {REGISTRY}:1.2.0"]
    assert final.evidence and final.verification and final.verification.ok
    checks = {c.name: c for c in final.verification.checks}
    assert checks["error_ratio"].ok and checks["p95"].ok and checks["alerts"].ok, checks


async def test_verification_fails_naming_the_criterion_when_the_target_is_bad_too(
    guarded: GuardStack,
) -> None:
    await release(guarded, "1.2.0")  # revision 4; revision 3 is the 60% image
    request = RollbackRequest(
        deployment="tekutoko-api",
        to_revision=3,
        severity=Severity.IMMEDIATE,
        reason="drill: roll back onto a bad image",
        requested_by="oncall",
    )
    handle = await guarded.client.start_workflow(
        DeploymentRollbackWorkflow.run,
        request,
        id=f"rollback-bad-{uuid.uuid4().hex[:6]}",
        task_queue=guarded.queue,
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), 120)
    message = failure.value.cause.message
    assert (
        "verification failed" in message
        and "error_ratio: error ratio" in message
        and "x the limit" in message
    ), message
    status = await handle.query(DeploymentRollbackWorkflow.status)
    assert status.phase is Phase.FAILED
    assert not {c.name: c for c in status.verification.checks}["error_ratio"].ok


async def test_filters_that_match_nothing_fail_the_guard_and_the_verification_naming_the_setting(
    guarded: GuardStack,
) -> None:
    await release(guarded, "1.2.0")
    await asyncio.to_thread(guarded.sandbox.until_next_minute)
    await asyncio.to_thread(guarded.sandbox.until_readable)
    entry = guarded.catalog.services[0]
    # The old guess at a LoadBalancer Service's metrics: GKE names no forwarding rule so.
    guarded.catalog.services[0] = entry.model_copy(
        update={
            "monitoring": entry.monitoring.model_copy(
                update={
                    "resource_filter": "resource.labels.forwarding_rule_name = "
                    '"{namespace}-{service}"'
                }
            )
        }
    )
    request = GuardRequest(
        deployment="tekutoko-api",
        duration_seconds=120,
        interval_seconds=INTERVAL,
        requested_by="cd-pipeline",
        language="en",
    )
    guard = await guarded.client.start_workflow(
        ReleaseGuardWorkflow.run,
        request,
        id=f"guard-nothing-{uuid.uuid4().hex[:6]}",
        task_queue=guarded.queue,
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(guard.result(), 60)
    assert (
        "monitoring.resource_filter" in failure.value.cause.message
        and "not a healthy service" in failure.value.cause.message
    )
    assert (await guard.query(ReleaseGuardWorkflow.status)).phase is GuardPhase.FAILED
    # No alerting policy behind the alert filter: "no open alert" must not pass verification.
    guarded.catalog.services[0] = entry.model_copy(
        update={
            "monitoring": entry.monitoring.model_copy(
                update={"alert_policy_filter": 'user_label.team = "nobody"'}
            )
        }
    )
    await release(guarded, "1.3.0")
    rollback = await guarded.client.start_workflow(
        DeploymentRollbackWorkflow.run,
        RollbackRequest(
            deployment="tekutoko-api",
            severity=Severity.IMMEDIATE,
            reason="drill: alert policies missing",
            requested_by="oncall",
        ),
        id=f"rollback-nothing-{uuid.uuid4().hex[:6]}",
        task_queue=guarded.queue,
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(rollback.result(), 90)
    assert "monitoring.alert_policy_filter" in str(failure.value.cause.message), (
        failure.value.cause.message
    )
