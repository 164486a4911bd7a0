"""The runbook's post-checks on the sandbox, end to end: a rollback onto pods
that burn CPU, exhaust the database's connection pool or keep logging errors is
not verified, and says which check failed and by how much; a rollback onto
healthy pods is verified, with every check's figures in the completion notice.

The container metrics and num_backends come from the sandbox's Cloud
Monitoring emulator through the official gRPC client (num_backends counted in
the real PostgreSQL's pg_stat_activity, the pool image really holding its
connections); the errors from its Cloud Logging emulator through the
discovery client."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from googleapiclient.http import build_http
from kubernetes.aio import client as kube
from kubernetes.aio import config as kube_config
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

from activities.catalog import CatalogActivities
from activities.cloud_logging import CloudLogging
from activities.kubernetes import KubernetesActivities
from activities.notify import NotifyActivities
from activities.verify import VerifyActivities
from runbook.catalog import ApprovalPolicy, Catalog, Channel, ServiceEntry
from runbook.models import Phase, RollbackRequest, RollbackResult, Severity
from runbook.postchecks import PostChecks
from sandbox.scenario import load_scenario
from tests.conftest import METRICS_DELAY, RunningSandbox, fast_scenario
from tests.integration.cd_stack import sandbox_monitoring
from worker.main import WORKFLOWS
from workflows.deployment_rollback import DeploymentRollbackWorkflow

pytestmark = pytest.mark.integration
NS, NAME = "default", "tekutoko-api"
IMAGE = "asia-northeast1-docker.pkg.dev/tekutoko-prod/tekutoko/tekutoko-api"


@dataclass
class PostStack:
    client: object
    queue: str
    apps: kube.AppsV1Api
    notices: Path


@pytest.fixture
def load_sandbox(tmp_path: Path, request) -> RunningSandbox:
    """The sandbox; with its Cloud SQL instance when the test is parametrized `databases`."""
    if getattr(request, "param", "") == "databases":
        scenario = fast_scenario(
            "tekutoko-release", databases=load_scenario("tekutoko-release").databases
        )
    else:
        scenario = fast_scenario()
    running = RunningSandbox(
        scenario, tmp_path / "sandbox"
    )  # its images *-cpu, *-pool and *-errors fail the post-checks
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def post_stack(dev_env, load_sandbox: RunningSandbox, tmp_path) -> AsyncIterator[PostStack]:
    endpoints = json.loads(load_sandbox.sandbox.endpoints_path.read_text())
    has_db = bool(load_sandbox.sandbox.scenario.databases)
    entry = ServiceEntry(
        name=NAME,
        deployment=NAME,
        service=NAME,
        approval=ApprovalPolicy(approvers=["sre-lead"]),
        channels=[Channel(kind="jsonl", path=str(tmp_path / "notices.jsonl"))],
        post_checks=PostChecks(
            ingestion_delay_seconds=METRICS_DELAY,
            max_connections=40,
            cloudsql_instance="tekutoko-db" if has_db else None,
        ),
        verification_window_seconds=20,
        rollout_timeout_seconds=60,
    )
    queue = f"post-{uuid.uuid4().hex[:8]}"
    api = await kube_config.new_client_from_config(config_file=str(load_sandbox.kubeconfig))
    apps, core = kube.AppsV1Api(api), kube.CoreV1Api(api)
    channel = grpc.aio.insecure_channel(endpoints["cloud_monitoring"])
    async with aiohttp.ClientSession() as session:
        monitoring = sandbox_monitoring(endpoints, load_sandbox, session, channel)
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
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=activities,
            workflow_failure_exception_types=[Exception],
        ):
            yield PostStack(dev_env.client, queue, apps, tmp_path / "notices.jsonl")
    await channel.close()
    await api.close()


async def release(stack: PostStack, tag: str) -> None:
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "api", "image": f"{IMAGE}:{tag}"}]}}}
    }
    await stack.apps.patch_namespaced_deployment(NAME, NS, patch)
    for _ in range(400):
        d = await stack.apps.read_namespaced_deployment(NAME, NS)
        s = d.status
        if (
            s.observed_generation >= d.metadata.generation
            and s.updated_replicas == s.replicas == s.available_replicas == d.spec.replicas
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"release {tag} did not roll out")


async def roll_back_onto(stack: PostStack, tag: str):
    """Release `tag`, then the broken 1.3.0, then roll back (onto `tag`)."""
    await release(stack, tag)
    await release(stack, "1.3.0")
    request = RollbackRequest(
        deployment=NAME,
        severity=Severity.IMMEDIATE,
        reason=f"drill: back onto {tag}",
        requested_by="oncall",
        language="en",
    )
    handle = await stack.client.start_workflow(
        DeploymentRollbackWorkflow.run,
        request,
        id=f"post-{tag}-{uuid.uuid4().hex[:6]}",
        task_queue=stack.queue,
    )
    try:
        result: RollbackResult = await asyncio.wait_for(handle.result(), 120)
        return result.status, None
    except WorkflowFailureError as failure:
        return await handle.query(DeploymentRollbackWorkflow.status), failure.cause.message


def checks_of(status) -> dict:
    found = {c.name: c for c in status.verification.checks}
    print(
        "\n".join(
            f"{c.name}: {'ok' if c.ok else 'FAILED'}: {c.detail[:160]}" for c in found.values()
        )
    )
    return found


async def test_pods_that_burn_cpu_are_not_verified(post_stack: PostStack) -> None:
    status, message = await roll_back_onto(post_stack, "1.2.1-cpu")
    assert status.phase is Phase.FAILED and message and "verification failed" in message, message
    cpu = checks_of(status)["cpu"]
    assert (
        not cpu.ok
        and "CPU peak 1" in cpu.detail
        and "catalog limit 80%" in cpu.detail
        and "% over" in cpu.detail
    ), cpu.detail
    assert "cpu: CPU peak" in message  # the failure names the check and the figure
    assert checks_of(status)["memory"].ok and checks_of(status)["logs"].ok


async def test_pods_that_keep_logging_errors_are_not_verified(post_stack: PostStack) -> None:
    status, message = await roll_back_onto(post_stack, "1.2.1-errors")
    assert status.phase is Phase.FAILED and "logs: " in message, message
    logs = checks_of(status)["logs"]
    assert (
        not logs.ok
        and "severity >= ERROR since the rollback" in logs.detail
        and "over" in logs.detail
        and "background job failed" in logs.detail
    )
    assert checks_of(status)["cpu"].ok and checks_of(status)["pods"].ok


async def test_healthy_pods_are_verified_with_their_figures_and_log_tails(
    post_stack: PostStack,
) -> None:
    status, message = await roll_back_onto(post_stack, "1.2.0")
    assert message is None and status.phase is Phase.COMPLETED and status.verification.ok
    found = checks_of(status)
    assert (
        found["cpu"].ok
        and "peak 2" in found["cpu"].detail
        and found["memory"].ok
        and found["logs"].ok
    )
    assert found["logs"].detail.startswith("0 log entries")
    assert found["connection_pool"].detail.startswith("skipped")  # no Cloud SQL in this sandbox
    assert (
        all(len(lines) <= 50 for lines in status.verification.pod_logs.values())
        and len(status.verification.pod_logs) == 3
    )
    done = {item.key for item in status.checklist if item.done_at}
    assert {"pods", "health", "api", "monitoring"} <= done
    complete = [
        json.loads(line)
        for line in post_stack.notices.read_text().splitlines()
        if '"complete"' in line
    ][-1]
    assert (
        "Result: service healthy\n- Pods [OK]: 3/3" in complete["text"]
        and "- CPU utilization [OK]: CPU peak" in complete["text"]
    )


@pytest.mark.parametrize("load_sandbox", ["databases"], indirect=True)
async def test_pods_that_exhaust_the_connection_pool_are_not_verified(
    post_stack: PostStack,
) -> None:
    status, message = await roll_back_onto(post_stack, "1.2.1-pool")
    assert status.phase is Phase.FAILED and "connection_pool: " in message, message
    pool = checks_of(status)["connection_pool"]
    assert (
        not pool.ok
        and "of max_connections 40 in use" in pool.detail
        and "> 80%" in pool.detail
        and "over" in pool.detail
    ), pool.detail

    status, message = await roll_back_onto(post_stack, "1.2.0")
    assert message is None and status.verification.ok, message
    pool = checks_of(status)["connection_pool"]
    assert pool.ok and pool.detail.startswith("0 of max_connections 40"), pool.detail
